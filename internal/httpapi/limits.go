package httpapi

import (
	"context"
	"time"
)

// The limits of the HTTP front door, offered to the other front doors of the process (the
// gRPC server), so that a key has one rate limit and an address one failed-authentication
// allowance whichever door it uses: the same buckets, in Redis when Config.RateRedis is set.

// TakeKeyRate takes one request of the rate limit of key (a tenant, auth.Principal.KeyID).
// It always allows when rate limiting is off; when it refuses, retryAfter is how long until
// a request is allowed again.
func (s *Server) TakeKeyRate(ctx context.Context, key string) (allowed bool, retryAfter time.Duration) {
	if s.limiter == nil {
		return true, 0
	}
	var d rateDecision
	if s.shared != nil {
		d = s.shared.take(ctx, key)
	} else {
		d = s.limiter.take(key)
	}
	return d.allowed, d.retryAfter
}

// TakeAuthAttempt takes a token of the failed-authentication allowance of the client address
// addr before one of its keys is checked. It returns 0 when the check may go on; a positive
// wait, taking nothing, when none is left (refuse the call before checking its key). A check
// that succeeds gives its token back with RefundAuthAttempt.
func (s *Server) TakeAuthAttempt(addr string) time.Duration {
	if s.authFail == nil {
		return 0
	}
	return s.authFail.take(addr)
}

// RefundAuthAttempt gives back the token that TakeAuthAttempt took for addr.
func (s *Server) RefundAuthAttempt(addr string) { s.authSucceeded(addr) }
