package testutil

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// The browser helper reports what a page does wrong: a console.error, an
// uncaught exception, a script the Content-Security-Policy blocks and a
// resource that fails to load; and a clean page reports nothing.
func TestBrowserConsoleAndScreenshot(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/bad", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!DOCTYPE html><html><head><title>bad</title><script src="/bad.js"></script>
<script>console.log("inline ran")</script><link rel="icon" href="data:,"></head><body><img src="/missing.png" alt=""></body></html>`))
	})
	mux.HandleFunc("/bad.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write([]byte(`console.error("boom from the page"); setTimeout(function () { null.f(); }, 0);`))
	})
	mux.HandleFunc("/good", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!DOCTYPE html><html><head><title>good</title><link rel="icon" href="data:,"></head><body><h1>Fine</h1></body></html>`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tab := NewTab(t, TabOptions{Artifacts: "testutil"})
	tab.Navigate(t, srv.URL+"/bad")
	errs := strings.Join(tab.ConsoleErrors(t), "\n")
	for _, want := range []string{"boom from the page", "null", "Content Security Policy", "404"} {
		if !strings.Contains(errs, want) {
			t.Errorf("console errors lack %q:\n%s", want, errs)
		}
	}

	clean := NewTab(t, TabOptions{Width: 390, Height: 844, Mobile: true, Artifacts: "testutil"})
	clean.Navigate(t, srv.URL+"/good")
	clean.AssertNoConsoleErrors(t, "a clean page")
	if h1 := clean.Text(t, "h1"); h1 != "Fine" {
		t.Errorf("h1 %q", h1)
	}
	t.Setenv("OAUTHRELAY_ARTIFACTS_DIR", t.TempDir())
	png, err := os.ReadFile(clean.Screenshot(t, "good"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n")) {
		t.Errorf("screenshot: %v, %d bytes", err, len(png))
	}
}
