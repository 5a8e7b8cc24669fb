package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrForbiddenURL is matched (errors.Is) by every refusal of a webhook URL: a URL that is not
// an absolute http(s) URL with a host (ValidateURL), a host that does not exist, and a host
// or dialled address that is not a public one (loopback, private, link-local, metadata,
// CGNAT, multicast, …) unless private addresses are allowed. The concrete error is a
// *URLError whose Reason says why.
var ErrForbiddenURL = errors.New("webhook URL refused")

// MaxURLLength is the longest webhook URL accepted.
const MaxURLLength = 2048

// MaxRedirects is the number of redirects a delivery follows (307 and 308 only: see Sender).
const MaxRedirects = 3

// URLError is a refused webhook URL. It matches ErrForbiddenURL with errors.Is; Err, when
// set, is the underlying cause (e.g. a *net.DNSError).
type URLError struct {
	Reason string // human-readable, safe to show to the client: never the full URL
	Err    error
}

// Error returns "webhook URL refused: <reason>".
func (e *URLError) Error() string { return ErrForbiddenURL.Error() + ": " + e.Reason }

// Is reports whether target is ErrForbiddenURL.
func (e *URLError) Is(target error) bool { return target == ErrForbiddenURL }

// Unwrap returns the cause, if any.
func (e *URLError) Unwrap() error { return e.Err }

func refuse(format string, args ...any) *URLError {
	return &URLError{Reason: fmt.Sprintf(format, args...)}
}

// Resolver looks up the addresses of a host name. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// ValidateURL checks a webhook URL at job submission. It refuses, with an error matching
// ErrForbiddenURL (a *URLError saying why):
//   - a URL that is empty, longer than MaxURLLength, unparsable, or not absolute;
//   - a scheme other than http or https;
//   - user information (user:password@);
//   - a missing host, a port outside 1-65535, a zoned IPv6 literal, or a host that looks like
//     an IPv4 address in a non-canonical form (127.1, 2130706433, 0x7f.0.0.1);
//   - unless allowPrivate: the names localhost and *.localhost, a host that does not resolve,
//     and a host of which any resolved address (or the IP literal itself) is not public:
//     loopback, private (RFC 1918, fc00::/7), link-local (incl. the cloud metadata addresses
//     169.254.169.254 and fd00:ec2::254), CGNAT 100.64/10, multicast, unspecified,
//     broadcast, reserved, documentation and benchmarking ranges, and the IPv4-mapped,
//     NAT64 and 6to4 IPv6 forms of any of those.
//
// allowPrivate (WEBHOOK_ALLOW_PRIVATE, for tests and local development) lifts the address
// checks, and with them the DNS lookup, but keeps the checks of the URL's shape.
//
// An error that does not match ErrForbiddenURL is a failure of the check itself (a DNS
// server that does not answer, ctx done): the URL may be fine. IP literals need no DNS.
//
// The check at submission is not enough on its own (DNS can change before the delivery):
// the Sender's client checks again the address it actually dials, and every redirect.
func ValidateURL(ctx context.Context, raw string, allowPrivate bool) error {
	return validateURL(ctx, net.DefaultResolver, raw, allowPrivate)
}

func validateURL(ctx context.Context, r Resolver, raw string, allowPrivate bool) error {
	u, err := parseURL(raw)
	if err != nil {
		return err
	}
	if allowPrivate {
		return nil
	}
	host := normalHost(u.Hostname())
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return refuse("host %q is a loopback name", host)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if class := addrClass(a); class != "" {
			return refuse("address %s is %s", a, class)
		}
		return nil
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return &URLError{Reason: fmt.Sprintf("host %q does not resolve", host), Err: err}
		}
		return fmt.Errorf("webhook URL: resolve %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return refuse("host %q has no addresses", host)
	}
	for _, a := range addrs {
		if class := addrClass(a); class != "" {
			return refuse("host %q resolves to %s, which is %s", host, a.Unmap(), class)
		}
	}
	return nil
}

// parseURL checks the shape of a webhook URL; its errors are *URLError.
func parseURL(raw string) (*url.URL, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, refuse("URL is empty")
	}
	if len(raw) > MaxURLLength {
		return nil, refuse("URL is longer than %d bytes", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, refuse("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, refuse("scheme must be http or https")
	}
	if u.Opaque != "" {
		return nil, refuse("URL must be absolute (scheme://host/path)")
	}
	if u.User != nil {
		return nil, refuse("URL must not contain user information")
	}
	host := u.Hostname()
	if host == "" {
		return nil, refuse("URL has no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, refuse("port must be between 1 and 65535")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, refuse("port must be between 1 and 65535")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return nil, refuse("IPv6 zones are not allowed")
		}
		return u, nil
	}
	if looksNumeric(normalHost(host)) {
		return nil, refuse("host %q looks like an IP address in a non-standard form", host)
	}
	return u, nil
}

func normalHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// looksNumeric reports whether the last label of a host that is not a canonical IP literal is
// a number (decimal, octal or 0x hex): such hosts are IPv4 addresses in the forms that
// inet_aton accepts (127.1, 2130706433, 0x7f.1), never DNS names (no top-level domain is
// numeric).
func looksNumeric(host string) bool {
	last := host
	if i := strings.LastIndexByte(host, '.'); i >= 0 {
		last = host[i+1:]
	}
	if last == "" {
		return false
	}
	if strings.HasPrefix(last, "0x") {
		last = last[2:]
		if last == "" {
			return true
		}
		for _, c := range last {
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
		return true
	}
	for _, c := range last {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

type classedPrefix struct {
	prefix netip.Prefix
	class  string
}

func mustPrefixes(class string, ps ...string) []classedPrefix {
	out := make([]classedPrefix, len(ps))
	for i, p := range ps {
		out[i] = classedPrefix{netip.MustParsePrefix(p), class}
	}
	return out
}

// Non-public ranges (IANA IPv4 and IPv6 special-purpose address registries). Read-only.
var (
	blockedV4 = concat(
		mustPrefixes("unspecified or this-network", "0.0.0.0/8"),
		mustPrefixes("loopback", "127.0.0.0/8"),
		mustPrefixes("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
		mustPrefixes("link-local (incl. cloud metadata)", "169.254.0.0/16"),
		mustPrefixes("shared address space (CGNAT)", "100.64.0.0/10"),
		mustPrefixes("IETF protocol assignment", "192.0.0.0/24"),
		mustPrefixes("documentation", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"),
		mustPrefixes("6to4 relay anycast", "192.88.99.0/24"),
		mustPrefixes("benchmarking", "198.18.0.0/15"),
		mustPrefixes("multicast", "224.0.0.0/4"),
		mustPrefixes("reserved or broadcast", "240.0.0.0/4"),
	)
	// IPv6 outside 2000::/3 is refused as a whole; these are named for the message.
	namedV6 = concat(
		mustPrefixes("unspecified", "::/128"),
		mustPrefixes("loopback", "::1/128"),
		mustPrefixes("IPv4-compatible", "::/96"),
		mustPrefixes("unique local (private)", "fc00::/7"),
		mustPrefixes("link-local", "fe80::/10"),
		mustPrefixes("site-local", "fec0::/10"),
		mustPrefixes("multicast", "ff00::/8"),
		mustPrefixes("discard-only", "100::/64"),
		mustPrefixes("local-use NAT64", "64:ff9b:1::/48"),
	)
	// Inside 2000::/3.
	blockedV6 = concat(
		mustPrefixes("documentation", "2001:db8::/32", "3fff::/20"),
		mustPrefixes("IETF protocol assignment (Teredo, benchmarking, ORCHID)", "2001::/23"),
	)
	globalV6  = netip.MustParsePrefix("2000::/3")
	nat64WKP  = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

func concat(lists ...[]classedPrefix) []classedPrefix {
	var out []classedPrefix
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// addrClass returns "" when a is a public unicast address, else what it is ("loopback",
// "private", …).
func addrClass(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	if a.Zone() != "" {
		return "a scoped (zoned) address"
	}
	a = a.Unmap() // ::ffff:a.b.c.d is a.b.c.d
	if a.Is4() {
		for _, b := range blockedV4 {
			if b.prefix.Contains(a) {
				return b.class
			}
		}
		return ""
	}
	b := a.As16()
	switch {
	case nat64WKP.Contains(a): // 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway
		if c := addrClass(netip.AddrFrom4([4]byte(b[12:16]))); c != "" {
			return c + " (NAT64)"
		}
		return ""
	case sixToFour.Contains(a): // 2002:AABB:CCDD::/48 is 6to4 for AA.BB.CC.DD
		if c := addrClass(netip.AddrFrom4([4]byte(b[2:6]))); c != "" {
			return c + " (6to4)"
		}
		return ""
	}
	if !globalV6.Contains(a) {
		for _, p := range namedV6 {
			if p.prefix.Contains(a) {
				return p.class
			}
		}
		return "not global unicast"
	}
	for _, p := range blockedV6 {
		if p.prefix.Contains(a) {
			return p.class
		}
	}
	return ""
}

// guard dials only public addresses (unless allowPrivate): it resolves the host itself,
// refuses when any address is not public, and dials the checked addresses; the dialer's
// Control hook checks once more the address of the socket being connected. A name that
// resolves to a public address at submission and to a private one at delivery (DNS rebinding)
// is therefore refused.
type guard struct {
	allowPrivate bool
	resolver     Resolver
	dialer       *net.Dialer
	// trust, when set (tests only), lets the dialer connect to the address it accepts, as if
	// it were public.
	trust func(netip.AddrPort) bool
}

func newGuard(allowPrivate bool, r Resolver, timeout time.Duration) *guard {
	if r == nil {
		r = net.DefaultResolver
	}
	g := &guard{allowPrivate: allowPrivate, resolver: r}
	g.dialer = &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.control}
	return g
}

func (g *guard) refused(ap netip.AddrPort) string {
	if g.allowPrivate || (g.trust != nil && g.trust(ap)) {
		return ""
	}
	return addrClass(ap.Addr())
}

// control runs after the address is chosen and before connect(2).
func (g *guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &URLError{Reason: fmt.Sprintf("cannot check dialled address %q", address), Err: err}
	}
	if c := g.refused(ap); c != "" {
		return refuse("dialled address %s is %s", ap.Addr().Unmap(), c)
	}
	return nil
}

func (g *guard) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, refuse("bad port %q", portStr)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		if !g.allowPrivate {
			if h := normalHost(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
				return nil, refuse("host %q is a loopback name", h)
			}
		}
		addrs, err = g.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err // DNS trouble is worth a retry
		}
		if len(addrs) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
	}
	for _, a := range addrs {
		if c := g.refused(netip.AddrPortFrom(a, uint16(port))); c != "" {
			if a.String() == host {
				return nil, refuse("address %s is %s", a.Unmap(), c)
			}
			return nil, refuse("host %q resolves to %s, which is %s", host, a.Unmap(), c)
		}
	}
	var errs []error
	for _, a := range addrs {
		conn, err := g.dialer.DialContext(ctx, network, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil || errors.Is(err, ErrForbiddenURL) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// errNotFollowed marks a redirect that the client refuses to follow (a permanent failure).
var errNotFollowed = errors.New("redirect not followed")

// checkRedirect follows at most MaxRedirects redirects, only 307 and 308 (which keep the POST
// and its body: 301, 302 and 303 would turn it into a GET without body), and validates each
// target like ValidateURL.
func (g *guard) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", errNotFollowed, MaxRedirects)
	}
	if req.Response != nil {
		switch req.Response.StatusCode {
		case http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		default:
			return http.ErrUseLastResponse // reported as a permanent failure by the Sender
		}
	}
	if err := validateURL(req.Context(), g.resolver, req.URL.String(), g.allowPrivate); err != nil {
		var ue *URLError
		if errors.As(err, &ue) {
			return &URLError{Reason: "redirect target: " + ue.Reason, Err: ue.Err}
		}
		return fmt.Errorf("redirect target: %w", err)
	}
	return nil
}

// NewClient returns an http.Client for webhook requests that is safe against SSRF: unless
// allowPrivate, its dialer resolves each host itself and connects only when every address is
// public (defeating DNS rebinding between ValidateURL and the delivery), and the socket's
// address is checked once more just before connect; it follows at most MaxRedirects
// redirects, only 307/308, each target validated like ValidateURL. It uses no proxy.
// timeout bounds a whole request, redirects and body included (0: DefaultTimeout).
// Refusals surface from Do as errors matching ErrForbiddenURL.
func NewClient(allowPrivate bool, timeout time.Duration) *http.Client {
	return newGuard(allowPrivate, nil, timeout).client(timeout)
}

func (g *guard) client(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	g.dialer.Timeout = timeout
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial on our behalf, past the guard
		DialContext:           g.dialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: g.checkRedirect}
}
