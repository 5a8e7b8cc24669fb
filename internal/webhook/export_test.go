package webhook

import (
	"context"
	"net/netip"
)

// Test hooks into unexported parts of the package.

// AddrClass is addrClass: "" for a public address, else what it is.
var AddrClass = addrClass

// ValidateURLWith is ValidateURL with another resolver.
func ValidateURLWith(ctx context.Context, r Resolver, raw string, allowPrivate bool) error {
	return validateURL(ctx, r, raw, allowPrivate)
}

// DialControl is the check that the guarded dialer runs just before connect(2).
func DialControl(allowPrivate bool) func(network, address string) error {
	g := newGuard(allowPrivate, nil, 0)
	return func(network, address string) error { return g.control(network, address, nil) }
}

// TrustDial lets s's dialer connect to ap as if it were a public address: a loopback test
// server then stands in for a public receiver, while every other check stays on.
func TrustDial(s *Sender, ap netip.AddrPort) {
	s.guard.trust = func(x netip.AddrPort) bool { return x == ap }
}
