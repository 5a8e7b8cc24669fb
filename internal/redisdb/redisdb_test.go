package redisdb

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in      string
		want    Options
		wantErr bool
	}{
		"single":             {in: "redis://127.0.0.1:6379/2", want: Options{Mode: ModeSingle, Addrs: []string{"127.0.0.1:6379"}, DB: 2}},
		"default port":       {in: "redis://cache", want: Options{Mode: ModeSingle, Addrs: []string{"cache:6379"}}},
		"password and tls":   {in: "rediss://:s3cret@h:6380/0", want: Options{Mode: ModeSingle, Addrs: []string{"h:6380"}, Password: "s3cret", TLS: true}},
		"sentinel":           {in: "redis-sentinel://:pw@s1:26379,s2:26379/1?master=mymaster", want: Options{Mode: ModeSentinel, Addrs: []string{"s1:26379", "s2:26379"}, DB: 1, Password: "pw", MasterName: "mymaster"}},
		"cluster":            {in: "redis-cluster://n1:7000,n2:7001", want: Options{Mode: ModeCluster, Addrs: []string{"n1:7000", "n2:7001"}}},
		"sentinel no master": {in: "redis-sentinel://s1:26379", wantErr: true},
		"cluster db":         {in: "redis-cluster://n1:7000/3", wantErr: true},
		"two hosts single":   {in: "redis://a:1,b:2", wantErr: true},
		"bad db":             {in: "redis://h/x", wantErr: true},
		"bad scheme":         {in: "http://h", wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseURL(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}
