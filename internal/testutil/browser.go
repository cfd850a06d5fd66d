package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Chromium from Debian's package drives the console's browser tests:
// headless, no sandbox (tests run as root in CI), no GPU, and nothing that
// reaches the network on its own (QUIC, background networking, component
// updates, sync, default apps) — tests talk to 127.0.0.1 only.
var chromiumFlags = []chromedp.ExecAllocatorOption{
	chromedp.Flag("headless", true),
	chromedp.Flag("no-sandbox", true),
	chromedp.Flag("disable-gpu", true),
	chromedp.Flag("disable-quic", true),
	chromedp.Flag("no-first-run", true),
	chromedp.Flag("disable-background-networking", true),
	chromedp.Flag("disable-component-update", true),
	chromedp.Flag("disable-sync", true),
	chromedp.Flag("disable-default-apps", true),
	chromedp.Flag("hide-scrollbars", true),
	chromedp.Flag("mute-audio", true),
}

// ChromiumPath finds the browser: $CHROMIUM_BIN, /usr/bin/chromium
// (Debian's chromium package) or chromium on PATH.
func ChromiumPath() (string, error) {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	return "", errors.New("Chromium is not installed: apt-get install chromium (.ci/run does), or set CHROMIUM_BIN")
}

var sharedBrowser struct {
	once    sync.Once
	ctx     context.Context // the browser's chromedp context; tabs derive from it
	cancel  context.CancelFunc
	dataDir string
	err     error
}

// startBrowser starts the test binary's one Chromium, with a fresh
// profile directory of its own.
func startBrowser() (context.Context, error) {
	sharedBrowser.once.Do(func() {
		bin, err := ChromiumPath()
		if err != nil {
			sharedBrowser.err = err
			return
		}
		if sharedBrowser.dataDir, err = os.MkdirTemp("", "oauthrelay-chromium-"); err != nil {
			sharedBrowser.err = err
			return
		}
		opts := append([]chromedp.ExecAllocatorOption{chromedp.ExecPath(bin), chromedp.UserDataDir(sharedBrowser.dataDir)}, chromiumFlags...)
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelCtx := chromedp.NewContext(alloc)
		sharedBrowser.ctx = ctx
		sharedBrowser.cancel = func() { cancelCtx(); cancelAlloc() }
		// The first Run starts the browser; it must have no deadline
		// (the deadline would end the browser), so it is bounded here.
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(ctx) }()
		select {
		case sharedBrowser.err = <-started:
		case <-time.After(60 * time.Second):
			sharedBrowser.err = errors.New("Chromium did not start within 60s")
		}
		if sharedBrowser.err != nil {
			sharedBrowser.err = fmt.Errorf("starting %s: %w", bin, sharedBrowser.err)
		}
	})
	return sharedBrowser.ctx, sharedBrowser.err
}

// StopSharedBrowser ends the browser the tabs ran in, if any, and removes
// its profile; call it from TestMain after m.Run.
func StopSharedBrowser() {
	if sharedBrowser.cancel != nil {
		sharedBrowser.cancel()
	}
	if sharedBrowser.dataDir != "" {
		_ = os.RemoveAll(sharedBrowser.dataDir)
	}
}

// TabOptions tune a new tab.
type TabOptions struct {
	// Width and Height are the viewport (0: 1280×900).
	Width, Height int64
	// Mobile emulates a phone: the page's viewport meta tag applies and
	// touch events are on.
	Mobile bool
	// Dark asks for the dark colour scheme (prefers-color-scheme: dark).
	Dark bool
	// NoScript switches JavaScript off, as some operators' browsers do.
	NoScript bool
	// Artifacts is the subdirectory of the artifacts directory that
	// Screenshot writes to ("console").
	Artifacts string
	// Timeout bounds everything the tab does (0: 20s; a query for an
	// element that never appears waits that long).
	Timeout time.Duration
}

// Tab is a browser tab in a browser context of its own (its own cookies
// and storage) of the shared Chromium; it collects what the pages write
// to the console, their uncaught exceptions and the browser's log
// entries (a failed load, a Content-Security-Policy violation).
type Tab struct {
	Ctx  context.Context
	opts TabOptions

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
	marks    int
}

// NewTab opens a tab; it is closed when the test ends. The test fails
// (never skips) when Chromium is missing.
func NewTab(t testing.TB, opts TabOptions) *Tab {
	t.Helper()
	browser, err := startBrowser()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.Width == 0 {
		opts.Width, opts.Height = 1280, 900
	}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, opts.Timeout)
	t.Cleanup(func() { cancelTimeout(); cancel() })
	tab := &Tab{Ctx: ctx, opts: opts}
	viewport := []chromedp.EmulateViewportOption{}
	if opts.Mobile {
		viewport = append(viewport, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
	}
	tab.Do(t, chromedp.EmulateViewport(opts.Width, opts.Height, viewport...))
	if opts.Dark {
		dark := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, dark); err != nil {
			t.Fatal(err)
		}
	}
	if opts.NoScript {
		if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
	}
	// Subscribe once the target exists: messages from then on are kept.
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			tab.mu.Lock()
			tab.messages = append(tab.messages, m)
			tab.mu.Unlock()
		}
	}()
	return tab
}

// Do runs the actions in the tab, failing the test on an error.
func (tab *Tab) Do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tab.Ctx, actions...); err != nil {
		t.Fatalf("browser: %v%s", err, tab.consoleDump())
	}
}

// Navigate loads url and waits for its load event.
func (tab *Tab) Navigate(t testing.TB, url string) {
	t.Helper()
	tab.Do(t, chromedp.Navigate(url))
}

// AndWait runs trigger (a click, a key press) and waits until the page it
// leads to has loaded.
func (tab *Tab) AndWait(t testing.TB, trigger chromedp.Action[chromedp.Void]) {
	t.Helper()
	if _, err := chromedp.Run(tab.Ctx, chromedp.WaitEvent(page.LoadEventFired, nil, trigger)); err != nil {
		t.Fatalf("browser: %v%s", err, tab.consoleDump())
	}
}

// Text returns the visible text of the first element sel selects.
func (tab *Tab) Text(t testing.TB, sel string) string {
	t.Helper()
	s, err := chromedp.Run(tab.Ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("browser: text of %s: %v%s", sel, err, tab.consoleDump())
	}
	return s
}

// Eval evaluates a JavaScript expression in the page.
func Eval[T any](t testing.TB, tab *Tab, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab.Ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluating %s: %v%s", expr, err, tab.consoleDump())
	}
	return v
}

// Location is the URL of the page.
func (tab *Tab) Location(t testing.TB) string {
	t.Helper()
	loc, err := chromedp.Run(tab.Ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// ConsoleErrors returns the errors and uncaught exceptions seen so far.
// It first writes a mark to the console and waits until the collector
// saw it, so that everything the page wrote before is in.
func (tab *Tab) ConsoleErrors(t testing.TB) []string {
	t.Helper()
	tab.mu.Lock()
	tab.marks++
	mark := fmt.Sprintf("testutil-mark-%d", tab.marks)
	tab.mu.Unlock()
	tab.Do(t, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("console.debug(%q)", mark)))
	WaitFor(t, 10*time.Second, "the console mark", func() bool {
		tab.mu.Lock()
		defer tab.mu.Unlock()
		for _, m := range tab.messages {
			if m.Text == mark {
				return true
			}
		}
		return false
	})
	tab.mu.Lock()
	defer tab.mu.Unlock()
	var errs []string
	for _, m := range tab.messages {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			errs = append(errs, fmt.Sprintf("%s (%s:%d)", m.String(), m.URL, m.Line))
		}
	}
	return errs
}

// AssertNoConsoleErrors fails the test for every console error or
// uncaught exception since the tab opened.
func (tab *Tab) AssertNoConsoleErrors(t testing.TB, what string) {
	t.Helper()
	for _, e := range tab.ConsoleErrors(t) {
		t.Errorf("%s: console error: %s", what, e)
	}
}

func (tab *Tab) consoleDump() string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if len(tab.messages) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nbrowser console:")
	for _, m := range tab.messages {
		fmt.Fprintf(&b, "\n  %s", m.String())
	}
	return b.String()
}

// Screenshot writes a full-page PNG of the tab to
// <artifacts>/<TabOptions.Artifacts>/<name>.png and returns its path.
func (tab *Tab) Screenshot(t testing.TB, name string) string {
	t.Helper()
	png, err := chromedp.Run(tab.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join(ArtifactsDir(t), tab.opts.Artifacts)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ArtifactsDir is where tests keep what a person may want to look at
// after a run (screenshots): $OAUTHRELAY_ARTIFACTS_DIR, else artifacts/
// at the repository's root (ignored by git).
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("OAUTHRELAY_ARTIFACTS_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "artifacts")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory: set OAUTHRELAY_ARTIFACTS_DIR")
		}
		dir = parent
	}
}
