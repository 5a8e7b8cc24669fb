package webhook_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/webhook"
)

// No test here makes a DNS query or an outbound connection: hosts are IP literals, names
// refused before any lookup (localhost), or answered by fakeResolver.

func TestValidateURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	refused := []struct {
		url    string
		reason string // a part of the reason
	}{
		{"http://127.0.0.1", "loopback"},
		{"http://127.0.0.1:8080/hook", "loopback"},
		{"http://127.255.255.254/", "loopback"},
		{"http://localhost", "loopback name"},
		{"http://LOCALHOST./hook", "loopback name"},
		{"http://api.localhost:3000/", "loopback name"},
		{"http://[::1]", "loopback"},
		{"http://[::1]:9000/x", "loopback"},
		{"http://169.254.169.254/latest/meta-data", "link-local"},
		{"http://[fd00:ec2::254]/latest/meta-data", "unique local"},
		{"http://[fe80::1]/", "link-local"},
		{"http://10.0.0.5", "private"},
		{"http://172.16.3.4/", "private"},
		{"http://172.31.255.255/", "private"},
		{"http://192.168.1.1/", "private"},
		{"http://100.64.0.1", "CGNAT"},
		{"http://0.0.0.0/", "unspecified"},
		{"http://[::]/", "unspecified"},
		{"http://255.255.255.255/", "broadcast"},
		{"http://224.0.0.1/", "multicast"},
		{"http://[ff02::1]/", "multicast"},
		{"http://192.0.2.10/", "documentation"},
		{"http://[2001:db8::1]/", "documentation"},
		{"http://198.18.0.1/", "benchmarking"},
		{"http://[::ffff:127.0.0.1]", "loopback"},
		{"http://[::ffff:7f00:1]/", "loopback"},
		{"http://[::ffff:169.254.169.254]/", "link-local"},
		{"http://[::ffff:10.0.0.1]/", "private"},
		{"http://[::127.0.0.1]/", "IPv4-compatible"},
		{"http://[64:ff9b::a9fe:a9fe]/", "link-local (incl. cloud metadata) (NAT64)"},
		{"http://[2002:7f00:1::1]/", "loopback (6to4)"},
		{"http://[2001::1]/", "Teredo"},
		{"http://2130706433/", "non-standard form"},
		{"http://127.1/", "non-standard form"},
		{"http://0x7f.0.0.1/", "non-standard form"},
		{"http://017700000001/", "non-standard form"},
		{"http://127.0.0.01/", "non-standard form"},
		{"http://[fe80::1%25eth0]/", "zones"},
		{"ftp://x", "scheme must be http or https"},
		{"file:///etc/passwd", "scheme must be http or https"},
		{"gopher://93.184.215.14/", "scheme must be http or https"},
		{"javascript:alert(1)", "scheme must be http or https"},
		{"http:93.184.215.14/hook", "absolute"},
		{"//93.184.215.14/hook", "scheme must be http or https"},
		{"http://user:pw@example.com", "user information"},
		{"http://user@93.184.215.14/", "user information"},
		{"http:///hook", "no host"},
		{"http://:80/", "no host"},
		{"http://93.184.215.14:0/", "port"},
		{"http://93.184.215.14:65536/", "port"},
		{"http://93.184.215.14:/", "port"},
		{"", "empty"},
		{"http://93.184.215.14/" + strings.Repeat("a", webhook.MaxURLLength), "longer"},
		{"http://exa mple.com/", "not a valid URL"},
	}
	for _, tc := range refused {
		t.Run("Refuses/"+tc.url, func(t *testing.T) {
			t.Parallel()
			err := webhook.ValidateURL(ctx, tc.url, false)
			require.ErrorIs(t, err, webhook.ErrForbiddenURL)
			require.ErrorContains(t, err, tc.reason)
			var ue *webhook.URLError
			require.ErrorAs(t, err, &ue)
			require.NotContains(t, ue.Reason, "pw", "the reason never repeats credentials")
		})
	}

	allowed := []string{
		"http://93.184.215.14/hook",
		"https://93.184.215.14:8443/hook?token=abc#frag",
		"HTTPS://93.184.215.14/hook",
		"http://[2606:4700:4700::1111]/hook",
		"http://[::ffff:93.184.215.14]/hook", // IPv4-mapped form of a public address
		"http://[64:ff9b::5db8:d70e]/hook",   // NAT64 of 93.184.215.14 (IPv6-only networks)
		"http://[2002:5db8:d70e::1]/hook",    // 6to4 of 93.184.215.14
	}
	for _, u := range allowed {
		t.Run("Allows/"+u, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, webhook.ValidateURL(ctx, u, false))
		})
	}

	t.Run("AllowPrivateLiftsAddressChecksOnly", func(t *testing.T) {
		t.Parallel()
		for _, u := range []string{"http://127.0.0.1", "http://127.0.0.1:8080/hook", "http://localhost:3000/x", "http://[::1]/", "http://10.0.0.5/", "http://169.254.169.254/"} {
			require.NoError(t, webhook.ValidateURL(ctx, u, true), u)
		}
		for _, u := range []string{"ftp://127.0.0.1/", "http://u:p@127.0.0.1/", "http://127.0.0.1:0/", "http:///x", "http://127.1/"} {
			require.ErrorIs(t, webhook.ValidateURL(ctx, u, true), webhook.ErrForbiddenURL, u)
		}
	})
}

func TestValidateURLResolvesNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	res := newResolver().
		set("public.test", "93.184.215.14 2606:4700:4700::1111").
		set("private.test", "10.0.0.5").
		set("mixed.test", "93.184.215.14 127.0.0.1").
		set("metadata.test", "::ffff:169.254.169.254").
		set("empty.test", "").
		fail("flaky.test", &net.DNSError{Err: "server misbehaving", Name: "flaky.test", IsTemporary: true})

	t.Run("PublicAddressesAllowed", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, webhook.ValidateURLWith(ctx, res, "https://public.test/hook", false))
	})
	t.Run("EveryAddressMustBePublic", func(t *testing.T) {
		t.Parallel()
		for host, want := range map[string]string{
			"private.test":  `host "private.test" resolves to 10.0.0.5, which is private`,
			"mixed.test":    `resolves to 127.0.0.1, which is loopback`,
			"metadata.test": `resolves to 169.254.169.254, which is link-local`,
			"empty.test":    `has no addresses`,
			"nowhere.test":  `does not resolve`,
		} {
			err := webhook.ValidateURLWith(ctx, res, "https://"+host+"/hook", false)
			require.ErrorIs(t, err, webhook.ErrForbiddenURL, host)
			require.ErrorContains(t, err, want, host)
		}
	})
	t.Run("DNSTroubleIsNotARefusal", func(t *testing.T) {
		t.Parallel()
		err := webhook.ValidateURLWith(ctx, res, "https://flaky.test/hook", false)
		require.Error(t, err)
		require.False(t, errors.Is(err, webhook.ErrForbiddenURL), "a DNS failure says nothing about the URL: %v", err)
	})
	t.Run("AllowPrivateSkipsTheLookup", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, webhook.ValidateURLWith(ctx, res, "https://private.test/hook", true))
		require.NoError(t, webhook.ValidateURLWith(ctx, res, "https://flaky.test/hook", true))
	})
}

func TestAddrClass(t *testing.T) {
	t.Parallel()
	public := []string{
		"93.184.215.14", "1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.15.255.255",
		"172.32.0.0", "192.167.255.255", "169.253.255.255", "223.255.255.255",
		"2606:4700:4700::1111", "2a00:1450:4001:82b::200e", "::ffff:8.8.8.8", "64:ff9b::808:808",
	}
	for _, s := range public {
		require.Empty(t, webhook.AddrClass(netip.MustParseAddr(s)), s)
	}
	nonPublic := []string{
		"0.0.0.0", "0.1.2.3", "10.255.255.255", "100.64.0.0", "100.127.255.255", "127.0.0.1",
		"169.254.169.254", "172.16.0.0", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.0.1",
		"198.19.255.255", "198.51.100.1", "203.0.113.1", "224.0.0.251", "239.255.255.250",
		"240.0.0.1", "255.255.255.255",
		"::", "::1", "::ffff:0.0.0.0", "::ffff:127.0.0.1", "::ffff:192.168.1.1", "::10.0.0.1",
		"64:ff9b::7f00:1", "64:ff9b:1::1", "100::1", "2001::1", "2001:2::1", "2001:db8::1",
		"2002:a00:1::", "3fff::1", "fc00::1", "fd00:ec2::254", "fe80::1", "fec0::1", "ff02::1",
		"4000::1", "fe80::1%eth0",
	}
	for _, s := range nonPublic {
		require.NotEmpty(t, webhook.AddrClass(netip.MustParseAddr(s)), s)
	}
}

func TestDialControl(t *testing.T) {
	t.Parallel()
	strict := webhook.DialControl(false)
	for _, addr := range []string{"127.0.0.1:80", "[::1]:443", "169.254.169.254:80", "[::ffff:10.0.0.1]:80", "[fd00:ec2::254]:80", "0.0.0.0:80"} {
		require.ErrorIs(t, strict("tcp", addr), webhook.ErrForbiddenURL, addr)
	}
	require.NoError(t, strict("tcp", "93.184.215.14:443"))
	require.NoError(t, webhook.DialControl(true)("tcp", "127.0.0.1:80"))
}
