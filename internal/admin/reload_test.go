package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A reload asked for through the console runs to its end when the
// client goes away (a closed tab, a curl interrupted): a half-applied
// configuration change must not depend on the operator's connection.
func TestReloadOutlivesItsClient(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	requests := make(chan context.Context, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/reload") {
			requests <- r.Context()
		}
		h.s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	admin := h.browserAt(srv.URL, srv.Client().Transport)
	admin.login(adminToken)
	csrf := admin.csrf()
	tests := []struct {
		name string
		req  func(ctx context.Context) *http.Request
	}{
		{"API", func(ctx context.Context) *http.Request {
			req := admin.newRequest(http.MethodPost, "/api/v1/reload", nil).WithContext(ctx)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			return req
		}},
		{"page", func(ctx context.Context) *http.Request {
			return admin.formRequest("/system/reload", url.Values{"csrf": {csrf}}).WithContext(ctx)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entered, proceed, outcome := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			h.b.mu.Lock()
			h.b.onReload = func(ctx context.Context) {
				close(entered)
				<-proceed
				outcome <- ctx.Err()
			}
			h.b.mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			done, req := make(chan struct{}), tc.req(ctx)
			go func() {
				defer close(done)
				if resp, err := admin.client.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			var reqCtx context.Context
			select {
			case reqCtx = <-requests:
			case <-time.After(10 * time.Second):
				t.Fatal("no request")
			}
			<-entered
			cancel()
			<-reqCtx.Done() // the server saw the client go
			close(proceed)
			if err := <-outcome; err != nil {
				t.Errorf("the reload's context ended with its client: %v", err)
			}
			<-done
		})
	}
	if h.b.reloadCount() != 2 {
		t.Errorf("%d reloads, want 2", h.b.reloadCount())
	}
	if n := len(h.auditTokenIDs("action=reload", "outcome=success", "scope=admin")); n != 2 {
		t.Errorf("%d reload audit lines, want 2", n)
	}
}
