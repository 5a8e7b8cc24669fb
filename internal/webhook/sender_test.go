package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/webhook"
)

func TestNewSender(t *testing.T) {
	t.Parallel()
	for name, secret := range map[string]string{
		"Empty":     "",
		"NoPrefix":  "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"NotBase64": "whsec_not*base64!",
		"TooShort":  "whsec_c2hvcnQ=",
	} {
		t.Run("Refuses"+name+"Secret", func(t *testing.T) {
			t.Parallel()
			_, err := webhook.NewSender(webhook.SenderConfig{Secret: secret})
			require.Error(t, err)
			require.NotContains(t, err.Error(), "MfKQ9r8", "the secret never appears in an error")
		})
	}
	t.Run("RefusesMetricsRegisteredTwice", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		_, err := webhook.NewSender(webhook.SenderConfig{Secret: testSecret, Registerer: reg})
		require.NoError(t, err)
		_, err = webhook.NewSender(webhook.SenderConfig{Secret: testSecret, Registerer: reg})
		require.Error(t, err)
	})
}

func TestSend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SignedRequestVerifiedByReferenceLibrary", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(http.StatusNoContent))
		s, b := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		d := delivery(t, uuid.New(), rcv.URL()+"/hooks/predq")

		res := s.Send(ctx, d)
		require.Equal(t, webhook.OutcomeDelivered, res.Outcome, "%v", res.Err)
		require.NoError(t, res.Err)
		require.Equal(t, http.StatusNoContent, res.StatusCode)
		require.Equal(t, b.clock.Now(), res.At)

		r := rcv.next(t)
		verify(t, r)
		require.Equal(t, http.MethodPost, r.method)
		require.Equal(t, "/hooks/predq", r.path)
		require.JSONEq(t, string(d.Payload), string(r.body))
		require.Equal(t, d.ID.String(), r.header.Get("webhook-id"))
		require.Equal(t, strconv.FormatInt(b.clock.Now().Unix(), 10), r.header.Get("webhook-timestamp"))
		require.Regexp(t, `^v1,[A-Za-z0-9+/]{43}=$`, r.header.Get("webhook-signature"))
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.Equal(t, webhook.DefaultUserAgent, r.header.Get("User-Agent"))

		require.Equal(t, 1.0, b.counter(t, webhook.OutcomeDelivered))
		require.Equal(t, uint64(1), b.observations(t, webhook.OutcomeDelivered))
	})

	t.Run("SameIDNewTimestampOnEveryAttempt", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n < 3 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		s, b := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		d := delivery(t, uuid.New(), rcv.URL())
		var stamps []string
		for i, want := range []webhook.Outcome{webhook.OutcomeRetry, webhook.OutcomeRetry, webhook.OutcomeDelivered} {
			require.Equal(t, want, s.Send(ctx, d).Outcome, "attempt %d", i+1)
			r := rcv.next(t)
			verify(t, r)
			require.Equal(t, d.ID.String(), r.header.Get("webhook-id"))
			require.JSONEq(t, string(d.Payload), string(r.body))
			stamps = append(stamps, r.header.Get("webhook-timestamp"))
			b.clock.Advance(30 * time.Second)
		}
		require.Len(t, uniq(stamps), 3, "each attempt has its own timestamp: %v", stamps)
		require.Equal(t, 2.0, b.counter(t, webhook.OutcomeRetry))
		require.Equal(t, 1.0, b.counter(t, webhook.OutcomeDelivered))
	})

	t.Run("ClassifiesStatus", func(t *testing.T) {
		t.Parallel()
		cases := map[int]webhook.Outcome{
			200: webhook.OutcomeDelivered, 201: webhook.OutcomeDelivered, 202: webhook.OutcomeDelivered, 204: webhook.OutcomeDelivered,
			408: webhook.OutcomeRetry, 429: webhook.OutcomeRetry,
			500: webhook.OutcomeRetry, 502: webhook.OutcomeRetry, 503: webhook.OutcomeRetry, 504: webhook.OutcomeRetry,
			400: webhook.OutcomeFailed, 401: webhook.OutcomeFailed, 403: webhook.OutcomeFailed, 404: webhook.OutcomeFailed,
			405: webhook.OutcomeFailed, 410: webhook.OutcomeFailed, 413: webhook.OutcomeFailed, 422: webhook.OutcomeFailed,
			301: webhook.OutcomeFailed, 302: webhook.OutcomeFailed, 303: webhook.OutcomeFailed, 304: webhook.OutcomeFailed,
		}
		for code, want := range cases {
			t.Run(strconv.Itoa(code), func(t *testing.T) {
				t.Parallel()
				rcv := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
					if code >= 300 && code < 400 {
						w.Header().Set("Location", "/elsewhere")
					}
					w.WriteHeader(code)
				})
				s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
				res := s.Send(ctx, delivery(t, uuid.New(), rcv.URL()))
				require.Equal(t, want, res.Outcome, "%d: %v", code, res.Err)
				require.Equal(t, code, res.StatusCode)
				if want == webhook.OutcomeDelivered {
					require.NoError(t, res.Err)
				} else {
					require.ErrorContains(t, res.Err, strconv.Itoa(code))
				}
				require.EqualValues(t, 1, rcv.hits.Load(), "3xx other than 307/308 are not followed")
			})
		}
	})

	t.Run("RetryAfterIsReported", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n == 1 {
				w.Header().Set("Retry-After", "120")
			} else {
				w.Header().Set("Retry-After", "86400")
			}
			w.WriteHeader(http.StatusTooManyRequests)
		})
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		d := delivery(t, uuid.New(), rcv.URL())
		require.Equal(t, 2*time.Minute, s.Send(ctx, d).RetryAfter)
		require.Equal(t, webhook.BackoffMax, s.Send(ctx, d).RetryAfter, "capped")
	})

	t.Run("TimeoutIsRetryable", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		rcv := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			select { // hang until the sender gives up (or the test ends)
			case <-r.Context().Done():
			case <-release:
			}
		})
		t.Cleanup(func() { close(release) })
		s, b := newSender(t, webhook.SenderConfig{AllowPrivate: true, Timeout: 150 * time.Millisecond})
		start := time.Now()
		res := s.Send(ctx, delivery(t, uuid.New(), rcv.URL()))
		require.Equal(t, webhook.OutcomeRetry, res.Outcome)
		require.Zero(t, res.StatusCode)
		require.ErrorContains(t, res.Err, "timeout after 150ms")
		require.GreaterOrEqual(t, res.Duration, 150*time.Millisecond)
		require.Less(t, time.Since(start), 5*time.Second)
		require.Equal(t, 1.0, b.counter(t, webhook.OutcomeRetry))
	})

	t.Run("ConnectionRefusedIsRetryable", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(200))
		url := rcv.URL()
		rcv.srv.Close() // nothing listens on the port any more
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		res := s.Send(ctx, delivery(t, uuid.New(), url))
		require.Equal(t, webhook.OutcomeRetry, res.Outcome)
		require.Error(t, res.Err)
		require.NotContains(t, res.Err.Error(), url, "the error does not repeat the URL (it may carry a token)")
	})

	t.Run("DialerRefusesLoopbackWithoutValidateURL", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(200)) // on 127.0.0.1
		s, b := newSender(t, webhook.SenderConfig{AllowPrivate: false})
		res := s.Send(ctx, delivery(t, uuid.New(), rcv.URL()))
		require.Equal(t, webhook.OutcomeFailed, res.Outcome)
		require.ErrorIs(t, res.Err, webhook.ErrForbiddenURL)
		require.ErrorContains(t, res.Err, "127.0.0.1 is loopback")
		require.Zero(t, rcv.hits.Load(), "no connection reached the receiver")
		require.Equal(t, 1.0, b.counter(t, webhook.OutcomeFailed))
	})

	t.Run("DialerRefusesLoopbackName", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(200))
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: false})
		res := s.Send(ctx, delivery(t, uuid.New(), "http://localhost:"+rcv.port(t)+"/hook"))
		require.Equal(t, webhook.OutcomeFailed, res.Outcome)
		require.ErrorIs(t, res.Err, webhook.ErrForbiddenURL)
		require.Zero(t, rcv.hits.Load())
	})

	t.Run("DNSRebindingRefused", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(200))
		// Public when the job is submitted, loopback when the webhook is sent.
		res := newResolver().set("rebind.test", "93.184.215.14", "127.0.0.1")
		url := "http://rebind.test:" + rcv.port(t) + "/hook"
		require.NoError(t, webhook.ValidateURLWith(ctx, res, url, false))

		s, _ := newSender(t, webhook.SenderConfig{Resolver: res})
		r := s.Send(ctx, delivery(t, uuid.New(), url))
		require.Equal(t, webhook.OutcomeFailed, r.Outcome)
		require.ErrorIs(t, r.Err, webhook.ErrForbiddenURL)
		require.ErrorContains(t, r.Err, `"rebind.test" resolves to 127.0.0.1, which is loopback`)
		require.Zero(t, rcv.hits.Load())
	})

	t.Run("LargeResponseBodyNotReadInFull", func(t *testing.T) {
		t.Parallel()
		wrote := make(chan int64, 1)
		rcv := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			chunk := make([]byte, 32<<10)
			var n int64
			defer func() { wrote <- n }()
			for n < 64<<20 { // 64 MiB, unless the sender hangs up first
				m, err := w.Write(chunk)
				n += int64(m)
				if err != nil {
					return
				}
			}
		})
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		res := s.Send(ctx, delivery(t, uuid.New(), rcv.URL()))
		require.Equal(t, webhook.OutcomeDelivered, res.Outcome, "%v", res.Err)
		require.Less(t, <-wrote, int64(64<<20), "the sender closed the connection after its 64 KiB")
	})

	t.Run("NewClientRefusesLoopback", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(http.StatusOK))
		resp, err := webhook.NewClient(false, time.Second).Post(rcv.URL(), "application/json", nil)
		if resp != nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, webhook.ErrForbiddenURL)
		require.Zero(t, rcv.hits.Load())

		resp, err = webhook.NewClient(true, time.Second).Post(rcv.URL(), "application/json", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.EqualValues(t, 1, rcv.hits.Load())
	})

	t.Run("ShapeRefusedBeforeAnyRequest", func(t *testing.T) {
		t.Parallel()
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		for _, u := range []string{"ftp://127.0.0.1/x", "http://u:p@127.0.0.1/", ""} {
			res := s.Send(ctx, delivery(t, uuid.New(), u))
			require.Equal(t, webhook.OutcomeFailed, res.Outcome, u)
			require.ErrorIs(t, res.Err, webhook.ErrForbiddenURL, u)
		}
	})
}

func TestSendRedirects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// A trusted first hop stands in for a public receiver that redirects.
	t.Run("TrustedHopDelivers", func(t *testing.T) {
		t.Parallel()
		first := newReceiver(t, status(200))
		s, _ := newSender(t, webhook.SenderConfig{Resolver: newResolver().set("hooks.test", "127.0.0.1")})
		webhook.TrustDial(s, first.addrPort(t))
		res := s.Send(ctx, delivery(t, uuid.New(), "http://hooks.test:"+first.port(t)+"/hook"))
		require.Equal(t, webhook.OutcomeDelivered, res.Outcome, "%v", res.Err)
	})

	for name, target := range map[string]func(internalURL, internalPort string) string{
		"ToLoopbackLiteral": func(u, _ string) string { return u + "/admin" },
		"ToLocalhost":       func(_, p string) string { return "http://localhost:" + p + "/admin" },
		"ToMetadata":        func(_, _ string) string { return "http://169.254.169.254/latest/meta-data/" },
		"ToNameOfPrivate":   func(_, p string) string { return "http://internal.test:" + p + "/" },
		"ToMappedLoopback":  func(_, p string) string { return "http://[::ffff:127.0.0.1]:" + p + "/" },
	} {
		t.Run("Refused"+name, func(t *testing.T) {
			t.Parallel()
			internal := newReceiver(t, status(200))
			loc := target(internal.URL(), internal.port(t))
			first := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
			})
			res := newResolver().set("hooks.test", "127.0.0.1").set("internal.test", "10.1.2.3")
			s, _ := newSender(t, webhook.SenderConfig{Resolver: res})
			webhook.TrustDial(s, first.addrPort(t))

			r := s.Send(ctx, delivery(t, uuid.New(), "http://hooks.test:"+first.port(t)+"/hook"))
			require.Equal(t, webhook.OutcomeFailed, r.Outcome)
			require.ErrorIs(t, r.Err, webhook.ErrForbiddenURL)
			require.ErrorContains(t, r.Err, "redirect target")
			require.EqualValues(t, 1, first.hits.Load())
			require.Zero(t, internal.hits.Load(), "the redirect target was never contacted")
		})
	}

	// chain answers with 307 or 308 to the next hop until hop redirects+1, which answers 200.
	chain := func(t *testing.T, redirects int) *receiver {
		var rcv *receiver
		rcv = newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n <= redirects {
				code := http.StatusTemporaryRedirect
				if n%2 == 0 {
					code = http.StatusPermanentRedirect
				}
				http.Redirect(w, r, fmt.Sprintf("%s/hop%d", rcv.URL(), n), code)
			}
		})
		return rcv
	}
	t.Run("Follows307And308UpToThree", func(t *testing.T) {
		t.Parallel()
		rcv := chain(t, webhook.MaxRedirects)
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		d := delivery(t, uuid.New(), rcv.URL())
		res := s.Send(ctx, d)
		require.Equal(t, webhook.OutcomeDelivered, res.Outcome, "%v", res.Err)
		for range webhook.MaxRedirects + 1 {
			r := rcv.next(t)
			require.Equal(t, http.MethodPost, r.method, "307/308 keep the method")
			require.JSONEq(t, string(d.Payload), string(r.body), "307/308 keep the body")
			verify(t, r)
		}
	})
	t.Run("StopsAfterThree", func(t *testing.T) {
		t.Parallel()
		rcv := chain(t, webhook.MaxRedirects+1)
		s, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true})
		res := s.Send(ctx, delivery(t, uuid.New(), rcv.URL()))
		require.Equal(t, webhook.OutcomeFailed, res.Outcome)
		require.ErrorContains(t, res.Err, "stopped after 3 redirects")
		require.EqualValues(t, webhook.MaxRedirects+1, rcv.hits.Load())
	})
}

func uniq(ss []string) map[string]bool {
	m := map[string]bool{}
	for _, s := range ss {
		m[s] = true
	}
	return m
}
