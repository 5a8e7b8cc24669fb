package telemetry

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestStartPprofServesProfilesOnItsOwnAddress(t *testing.T) {
	t.Parallel()
	stop, err := StartPprof("", nil)
	if err != nil {
		t.Fatalf("empty address: %v", err)
	}
	stop() // nothing was served

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err = StartPprof(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "telemetry.test") {
		t.Errorf("cmdline: %d %q, want 200 with the test binary's name", resp.StatusCode, b)
	}

	if _, err := StartPprof("127.0.0.1:notaport", nil); err == nil {
		t.Error("a bad address started a listener")
	}
}
