package deploy_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ngx is one nginx directive: `name args...;` or `name args... { block }`.
type ngx struct {
	name   string
	args   []string
	block  []*ngx
	parent *ngx
	line   int
}

// parseNginx reads nginx.conf syntax: directives, blocks, quotes, comments.
func parseNginx(src string) (*ngx, error) {
	type tok struct {
		s      string
		quoted bool
		line   int
	}
	var toks []tok
	line := 1
	for i := 0; i < len(src); {
		c := src[i]
		switch c {
		case '\n':
			line++
			i++
		case ' ', '\t', '\r':
			i++
		case '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case '{', '}', ';':
			toks = append(toks, tok{s: string(c), line: line})
			i++
		case '"', '\'':
			j := i + 1
			var b strings.Builder
			for j < len(src) && src[j] != c {
				if src[j] == '\\' && j+1 < len(src) {
					j++
				}
				if src[j] == '\n' {
					line++
				}
				b.WriteByte(src[j])
				j++
			}
			if j >= len(src) {
				return nil, fmt.Errorf("line %d: unterminated quote", line)
			}
			toks = append(toks, tok{s: b.String(), quoted: true, line: line})
			i = j + 1
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t\r\n{};", rune(src[j])) {
				j++
			}
			toks = append(toks, tok{s: src[i:j], line: line})
			i = j
		}
	}
	top := &ngx{name: "main"}
	cur := top
	var words []tok
	for _, t := range toks {
		if t.quoted {
			words = append(words, t)
			continue
		}
		switch t.s {
		case ";", "{":
			if len(words) == 0 {
				return nil, fmt.Errorf("line %d: %q without a directive", t.line, t.s)
			}
			d := &ngx{name: words[0].s, parent: cur, line: words[0].line}
			for _, w := range words[1:] {
				d.args = append(d.args, w.s)
			}
			cur.block = append(cur.block, d)
			words = nil
			if t.s == "{" {
				d.block = []*ngx{}
				cur = d
			}
		case "}":
			if len(words) > 0 || cur == top {
				return nil, fmt.Errorf("line %d: unexpected }", t.line)
			}
			cur = cur.parent
		default:
			words = append(words, t)
		}
	}
	if cur != top || len(words) > 0 {
		return nil, fmt.Errorf("unclosed block or directive at the end")
	}
	return top, nil
}

// children returns the directives named name directly inside d.
func (d *ngx) children(name string) []*ngx {
	var out []*ngx
	for _, c := range d.block {
		if c.name == name {
			out = append(out, c)
		}
	}
	return out
}

// effective returns the directives named name that apply in d: nginx inherits a directive
// from the enclosing level only when the current level has none of it (which is why one
// proxy_set_header in a location drops all the server's).
func (d *ngx) effective(name string) []*ngx {
	for l := d; l != nil; l = l.parent {
		if c := l.children(name); len(c) > 0 {
			return c
		}
	}
	return nil
}

// effectiveArg returns the first argument of the effective directive name, or def.
func (d *ngx) effectiveArg(name, def string) string {
	if e := d.effective(name); len(e) > 0 && len(e[len(e)-1].args) > 0 {
		return e[len(e)-1].args[0]
	}
	return def
}

// headers returns the effective proxy_set_header values by lower-case name.
func (d *ngx) headers() map[string]string {
	h := map[string]string{}
	for _, e := range d.effective("proxy_set_header") {
		if len(e.args) == 2 {
			h[strings.ToLower(e.args[0])] = e.args[1]
		}
	}
	return h
}

// matchLocation picks the location of server that nginx uses for uri: an exact match, else
// the longest prefix if it is ^~, else the first matching regex, else the longest prefix.
func matchLocation(server *ngx, uri string) (*ngx, error) {
	var longest *ngx
	longestLen := -1
	var regexes []*ngx
	for _, l := range server.children("location") {
		switch {
		case len(l.args) == 2 && l.args[0] == "=":
			if l.args[1] == uri {
				return l, nil
			}
		case len(l.args) == 2 && (l.args[0] == "~" || l.args[0] == "~*"):
			regexes = append(regexes, l)
		case len(l.args) == 2 && l.args[0] == "^~", len(l.args) == 1:
			p := l.args[len(l.args)-1]
			if strings.HasPrefix(uri, p) && len(p) > longestLen {
				longest, longestLen = l, len(p)
			}
		}
	}
	if longest != nil && longest.args[0] == "^~" {
		return longest, nil
	}
	for _, l := range regexes {
		expr := l.args[1]
		if l.args[0] == "~*" {
			expr = "(?i)" + expr
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("location %s %s: %w", l.args[0], l.args[1], err)
		}
		if re.MatchString(uri) {
			return l, nil
		}
	}
	if longest == nil {
		return nil, fmt.Errorf("no location serves %s", uri)
	}
	return longest, nil
}

// nginxDuration reads an nginx time: 90, 90s, 5m, 1h, 500ms, 1d.
func nginxDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

// nginxSize reads an nginx size: 1024, 8k, 8m, 1g (0 means no limit).
func nginxSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToLower(s[len(s)-1:]) {
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// checkNginx checks nginx.conf: the proxied paths reach an upstream of api replicas, the
// event stream is not buffered and may stay open, job uploads may be large and are streamed,
// every proxied request carries X-Request-ID; the gRPC server (if any) speaks HTTP/2 and
// passes every call to an upstream of the api replicas' gRPC port with its request id.
// apiHosts maps the compose services that run the api to their port, grpcHosts to their gRPC
// port. It returns the ports nginx listens on for HTTP and for gRPC (0: none).
func checkNginx(src string, apiHosts, grpcHosts map[string]int, bodyLimit int64) (int, int, []error) {
	listen, errs := checkNginxHTTP(src, apiHosts, grpcHosts, bodyLimit)
	grpcListen, grpcErrs := checkNginxGRPC(src)
	return listen, grpcListen, append(errs, grpcErrs...)
}

// grpcServers splits the server blocks of http into those that pass gRPC (a location with
// grpc_pass) and the others, and returns the upstreams that grpc_pass names.
func grpcServers(http *ngx) (grpcs, others []*ngx, upstreams map[string]bool) {
	upstreams = map[string]bool{}
	for _, srv := range http.children("server") {
		isGRPC := false
		for _, l := range srv.children("location") {
			for _, gp := range l.children("grpc_pass") {
				isGRPC = true
				if len(gp.args) == 1 {
					u := strings.TrimPrefix(strings.TrimPrefix(gp.args[0], "grpc://"), "grpcs://")
					upstreams[u] = true
				}
			}
		}
		if isGRPC {
			grpcs = append(grpcs, srv)
		} else {
			others = append(others, srv)
		}
	}
	return grpcs, others, upstreams
}

// checkNginxGRPC checks the gRPC server of nginx.conf, when it has one: one listen port,
// HTTP/2 (gRPC needs it, and without TLS nginx speaks it only when told), every location a
// grpc_pass to an upstream, the request id passed.
func checkNginxGRPC(src string) (int, []error) {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("nginx.conf: gRPC server: "+format, args...))
	}
	top, err := parseNginx(src)
	if err != nil || len(top.children("http")) != 1 {
		return 0, nil // reported by checkNginxHTTP
	}
	http := top.children("http")[0]
	grpcs, _, _ := grpcServers(http)
	if len(grpcs) == 0 {
		return 0, nil
	}
	if len(grpcs) > 1 {
		return 0, []error{fmt.Errorf("nginx.conf: want at most one gRPC server block, got %d", len(grpcs))}
	}
	srv := grpcs[0]
	listen := 0
	if l := srv.children("listen"); len(l) == 1 && len(l[0].args) > 0 {
		if listen, err = strconv.Atoi(l[0].args[0]); err != nil {
			fail("listen %q: want a port", l[0].args[0])
		}
	} else {
		fail("want one listen directive")
	}
	if srv.effectiveArg("http2", "off") != "on" {
		fail("want `http2 on` (gRPC is HTTP/2; without TLS nginx speaks it only when told)")
	}
	ups := map[string]bool{}
	for _, u := range http.children("upstream") {
		if len(u.args) == 1 {
			ups[u.args[0]] = true
		}
	}
	for _, l := range srv.children("location") {
		where := "location " + strings.Join(l.args, " ")
		gp := l.children("grpc_pass")
		if len(gp) != 1 || len(gp[0].args) != 1 {
			fail("%s: want one grpc_pass", where)
			continue
		}
		u := strings.TrimPrefix(gp[0].args[0], "grpc://")
		if !ups[u] {
			fail("%s: grpc_pass to %s, which is not an upstream", where, gp[0].args[0])
		}
		rid := false
		for _, h := range l.effective("grpc_set_header") {
			rid = rid || len(h.args) == 2 && strings.EqualFold(h.args[0], "x-request-id")
		}
		if !rid {
			fail("%s does not pass the x-request-id metadata (grpc_set_header)", where)
		}
	}
	if _, err := matchLocation(srv, "/inference.GRPCInferenceService/ModelInfer"); err != nil {
		fail("%v", err)
	}
	return listen, errs
}

// checkNginxHTTP checks the HTTP server of nginx.conf and every upstream.
func checkNginxHTTP(src string, apiHosts, grpcHosts map[string]int, bodyLimit int64) (int, []error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("nginx.conf: "+format, args...)) }
	top, err := parseNginx(src)
	if err != nil {
		return 0, []error{fmt.Errorf("nginx.conf: %w", err)}
	}
	https := top.children("http")
	if len(https) != 1 {
		return 0, []error{fmt.Errorf("nginx.conf: want one http block, got %d", len(https))}
	}
	http := https[0]
	_, servers, grpcUpstreams := grpcServers(http)
	if len(servers) != 1 {
		return 0, []error{fmt.Errorf("nginx.conf: want one HTTP server block (and at most one gRPC one), got %d", len(servers))}
	}
	server := servers[0]
	listen := 0
	if l := server.children("listen"); len(l) == 1 && len(l[0].args) > 0 {
		listen, err = strconv.Atoi(l[0].args[0])
		if err != nil {
			fail("listen %q: want a port", l[0].args[0])
		}
	} else {
		fail("want one listen directive in the server")
	}

	// Upstreams: replicas of the api, re-resolved through a resolver.
	upstreams := map[string]bool{}
	for _, u := range http.children("upstream") {
		if len(u.args) != 1 {
			continue
		}
		upstreams[u.args[0]] = true
		for _, s := range u.children("server") {
			if len(s.args) == 0 {
				continue
			}
			host, port, _ := splitHostPort(s.args[0])
			hosts, what := apiHosts, "the api listens on"
			if grpcUpstreams[u.args[0]] {
				hosts, what = grpcHosts, "the api serves gRPC on"
			}
			want, ok := hosts[host]
			if !ok {
				fail("upstream %s: server %s is not a compose service running the api", u.args[0], s.args[0])
			} else if port != strconv.Itoa(want) {
				fail("upstream %s: server %s, but %s %d", u.args[0], s.args[0], what, want)
			}
			if slices.Contains(s.args, "resolve") {
				if len(u.children("zone")) == 0 {
					fail("upstream %s: `resolve` needs a zone", u.args[0])
				}
				if len(http.effective("resolver")) == 0 {
					fail("upstream %s: `resolve` needs a resolver (Docker's: 127.0.0.11)", u.args[0])
				}
			}
		}
	}
	proxied := func(uri string) *ngx {
		l, err := matchLocation(server, uri)
		if err != nil {
			fail("%v", err)
			return nil
		}
		where := fmt.Sprintf("location %s (serving %s)", strings.Join(l.args, " "), uri)
		pp := l.children("proxy_pass")
		if len(pp) != 1 || len(pp[0].args) != 1 {
			fail("%s: want one proxy_pass", where)
			return l
		}
		target := strings.TrimPrefix(pp[0].args[0], "http://")
		target, _, _ = strings.Cut(target, "/")
		if !upstreams[target] {
			fail("%s: proxy_pass to %s, which is not an upstream", where, pp[0].args[0])
		}
		h := l.headers()
		for _, name := range []string{"host", "x-request-id", "x-forwarded-for"} {
			if h[name] == "" {
				fail("%s does not pass the %s header (a proxy_set_header at its level drops the inherited ones)", where, name)
			}
		}
		if conn, ok := h["connection"]; l.effectiveArg("proxy_http_version", "1.0") != "1.1" || !ok || conn != "" {
			fail("%s: want proxy_http_version 1.1 and proxy_set_header Connection \"\" (upstream keepalive, streaming)", where)
		}
		return l
	}

	// Ordinary API calls: bodies up to the api's own limit get through.
	if l := proxied("/api/v1/predict"); l != nil {
		if n, err := nginxSize(l.effectiveArg("client_max_body_size", "1m")); err != nil || n != 0 && n < bodyLimit {
			fail("location %s: client_max_body_size %s is below the api's BODY_LIMIT %d", strings.Join(l.args, " "), l.effectiveArg("client_max_body_size", "1m"), bodyLimit)
		}
	}
	proxied("/health/ready")
	proxied("/monitoring/")

	// Server-Sent Events: unbuffered, long-lived; that location serves the streams only.
	const events = "/api/v1/jobs/01J9Z3K6Q8V2N4M7P5R1S0T3W8/events"
	if l := proxied(events); l != nil {
		where := "location " + strings.Join(l.args, " ") + " (the job event stream)"
		if l.effectiveArg("proxy_buffering", "on") != "off" {
			fail("%s: want proxy_buffering off, or events arrive in bursts", where)
		}
		if d, err := nginxDuration(l.effectiveArg("proxy_read_timeout", "60s")); err != nil || d < 10*time.Minute {
			fail("%s: proxy_read_timeout %s: want at least 10m, the stream stays open", where, l.effectiveArg("proxy_read_timeout", "60s"))
		}
		if l.effectiveArg("gzip", "off") != "off" {
			fail("%s: gzip buffers the stream; turn it off", where)
		}
	}
	ev, _ := matchLocation(server, events)
	for _, other := range []string{"/api/v1/jobs/01J9Z3K6Q8V2N4M7P5R1S0T3W8", "/api/v1/jobs/01J9Z3K6Q8V2N4M7P5R1S0T3W8/items", "/api/v1/jobs"} {
		if l, err := matchLocation(server, other); err == nil && l == ev {
			fail("location %s, meant for the event stream, also serves %s", strings.Join(l.args, " "), other)
		}
	}

	// Job uploads: large, streamed.
	if l := proxied("/api/v1/jobs"); l != nil {
		where := "location " + strings.Join(l.args, " ") + " (job submission)"
		if n, err := nginxSize(l.effectiveArg("client_max_body_size", "1m")); err != nil || n != 0 && n < 100<<20 {
			fail("%s: client_max_body_size %s: want at least 100m for job files", where, l.effectiveArg("client_max_body_size", "1m"))
		}
		if l.effectiveArg("proxy_request_buffering", "on") != "off" {
			fail("%s: want proxy_request_buffering off (stream the upload to the api)", where)
		}
	}
	return listen, errs
}

func TestNginx(t *testing.T) {
	t.Parallel()
	img := dockerImage(t)
	apps, cf := composeApps(t, img)
	listen, grpcListen, errs := checkNginx(readFile(t, "deploy/nginx/nginx.conf"), apiHosts(apps), grpcHosts(apps), bodyLimit(t))
	requireNoProblems(t, errs)
	nginx := cf.Services["nginx"]
	require.Contains(t, containerPorts(nginx), listen, "compose publishes nginx's listen port")
	require.NotZero(t, grpcListen, "nginx proxies gRPC")
	require.Contains(t, containerPorts(nginx), grpcListen, "compose publishes nginx's gRPC port")
	require.Equal(t, "./deploy/nginx/nginx.conf", bindMounts(nginx)["/etc/nginx/nginx.conf"])
}

func apiHosts(apps map[string]composeApp) map[string]int {
	hosts := map[string]int{}
	for _, a := range apps {
		if a.role == roleAPI {
			hosts[a.name] = a.port
		}
	}
	return hosts
}

func grpcHosts(apps map[string]composeApp) map[string]int {
	hosts := map[string]int{}
	for _, a := range apps {
		if a.role == roleAPI {
			hosts[a.name] = a.grpcPort
		}
	}
	return hosts
}

func bodyLimit(t *testing.T) int64 {
	t.Helper()
	n, err := strconv.ParseInt(varDefault("BODY_LIMIT"), 10, 64)
	require.NoError(t, err)
	return n
}

func TestNginxProblems(t *testing.T) {
	t.Parallel()
	src := readFile(t, "deploy/nginx/nginx.conf")
	hosts, grpcPorts := map[string]int{"api": 8080}, map[string]int{"api": 8081}
	for _, tc := range []struct{ name, old, new, want string }{
		{"buffered events", "            proxy_buffering off;", "            proxy_buffering on;", "want proxy_buffering off"},
		{"short event timeout", "            proxy_read_timeout 1h;", "            proxy_read_timeout 60s;", "proxy_read_timeout 60s"},
		{"event regex does not match", `location ~ ^/api/v1/jobs/[^/]+/events$`, `location ~ ^/api/v1/job/[^/]+/events$`, "want proxy_buffering off"},
		{"header redefined in a location", "            proxy_buffering off;", "            proxy_buffering off;\n            proxy_set_header Connection \"\";", "does not pass the x-request-id header"},
		{"no request id", "        proxy_set_header X-Request-ID $req_id;\n", "", "does not pass the x-request-id header"},
		{"HTTP/1.0 upstream", "        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_set_header Host", "        proxy_set_header Host", "want proxy_http_version 1.1"},
		{"small uploads", "client_max_body_size 8g;", "client_max_body_size 10m;", "want at least 100m"},
		{"buffered uploads", "proxy_request_buffering off;", "proxy_request_buffering on;", "want proxy_request_buffering off"},
		{"small API bodies", "client_max_body_size  8m;", "client_max_body_size  1m;", "below the api's BODY_LIMIT"},
		{"wrong upstream port", "server api:8080 resolve", "server api:80 resolve", "the api listens on 8080"},
		{"wrong upstream host", "server api:8080 resolve", "server app:8080 resolve", "not a compose service running the api"},
		{"resolve without resolver", "    resolver 127.0.0.11 valid=10s ipv6=off;\n", "", "needs a resolver"},
		{"proxy to nowhere", "        location / {\n            proxy_pass http://api;", "        location / {\n            proxy_pass http://apii;", "not an upstream"},
		{"event location too wide", `location ~ ^/api/v1/jobs/[^/]+/events$`, `location ~ ^/api/v1/jobs/`, "also serves"},
		{"syntax", "worker_connections 4096;\n}", "worker_connections 4096;\n", "unclosed"},
		{"gRPC without HTTP/2", "        http2 on;\n", "", "want `http2 on`"},
		{"gRPC upstream on the HTTP port", "server api:8081 resolve", "server api:8080 resolve", "the api serves gRPC on 8081"},
		{"gRPC to nowhere", "grpc_pass grpc://api_grpc;", "grpc_pass grpc://api_grcp;", "not an upstream"},
		{"gRPC without request id", "        grpc_set_header x-request-id $req_id;\n", "", "x-request-id metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, errs := checkNginx(mustReplace(t, src, tc.old, tc.new), hosts, grpcPorts, 4<<20)
			requireProblem(t, errs, tc.want)
		})
	}
}

func TestMatchLocation(t *testing.T) {
	t.Parallel()
	top, err := parseNginx(`http { server {
		location / { a; }
		location /api/ { b; }
		location ^~ /static/ { c; }
		location = /exact { d; }
		location ~ ^/api/v1/jobs/[^/]+/events$ { e; }
		location ~* \.(png|css)$ { f; }
	} }`)
	require.NoError(t, err)
	server := top.children("http")[0].children("server")[0]
	for uri, want := range map[string]string{
		"/":                       "a",
		"/api/v1/predict":         "b",
		"/api/v1/jobs/x/events":   "e",
		"/api/v1/jobs/x/y/events": "b",
		"/static/x.css":           "c",
		"/img/x.PNG":              "f",
		"/exact":                  "d",
		"/exact/not":              "a",
	} {
		l, err := matchLocation(server, uri)
		require.NoError(t, err)
		require.Equal(t, want, l.block[0].name, uri)
	}
}
