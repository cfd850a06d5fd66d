package admin

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// The browser tests run the console in a real headless Chromium (Debian's
// package; they fail without it) against the fake runtime; one browser
// serves the whole test binary, each test in tabs of its own.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopSharedBrowser()
	os.Exit(code)
}

// viewports are the sizes every page is checked and photographed at.
var viewports = []testutil.TabOptions{
	{Width: 1280, Height: 900, Artifacts: "console"},
	{Width: 390, Height: 844, Mobile: true, Artifacts: "console"},
}

func viewportName(o testutil.TabOptions) string {
	if o.Mobile {
		return "phone"
	}
	return "desktop"
}

// signIn signs the tab in with token through the login form.
func signIn(t *testing.T, tab *testutil.Tab, h *harness, token string) {
	t.Helper()
	tab.Navigate(t, h.srv.URL+"/login")
	tab.Do(t, chromedp.SendKeys(chromedp.CSS("#token"), token))
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form.login button[type="submit"]`)))
	if loc := tab.Location(t); loc != h.srv.URL+"/" {
		t.Fatalf("after signing in: at %s\n%s", loc, tab.Text(t, "main"))
	}
}

// Every page renders without a console error (CSP violations and failed
// loads included) on a desktop and on a phone, without a horizontal
// scroll on the phone; each is photographed.
func TestBrowserPages(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	pages := []struct{ name, path, h1 string }{
		{"overview", "/", "Overview"},
		{"accounts", "/accounts", "Accounts"},
		{"queue", "/queue", "Queue"},
		{"history", "/history", "History"},
		{"message", "/messages/" + idQueued, "Message " + idQueued},
		{"system", "/system", "System"},
	}
	for _, vp := range viewports {
		tab := testutil.NewTab(t, vp)
		tab.Navigate(t, h.srv.URL+"/login")
		tab.Screenshot(t, "login-"+viewportName(vp))
		signIn(t, tab, h, adminToken)
		for _, p := range pages {
			t.Run(viewportName(vp)+" "+p.name, func(t *testing.T) {
				tab.Navigate(t, h.srv.URL+p.path)
				if got := tab.Text(t, "h1"); got != p.h1 {
					t.Errorf("h1 %q, want %q", got, p.h1)
				}
				if vp.Mobile {
					if wide := testutil.Eval[bool](t, tab, "document.documentElement.scrollWidth > document.documentElement.clientWidth"); wide {
						t.Error("the page is wider than the phone's screen")
					}
				}
				if n := testutil.Eval[int](t, tab, `Array.from(document.querySelectorAll("input:not([type=hidden]), select, button"))
					.filter(el => el.labels.length === 0 && !el.getAttribute("aria-label") && !(el.tagName === "BUTTON" && el.textContent.trim())).length`); n > 0 {
					t.Errorf("%d inputs without a label", n)
				}
				tab.Screenshot(t, p.name+"-"+viewportName(vp))
			})
		}
		tab.AssertNoConsoleErrors(t, viewportName(vp))
	}
	t.Run("dark", func(t *testing.T) {
		tab := testutil.NewTab(t, testutil.TabOptions{Dark: true, Artifacts: "console"})
		signIn(t, tab, h, adminToken)
		if bg := testutil.Eval[string](t, tab, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(21, 24, 28)" {
			t.Errorf("dark background %s", bg)
		}
		tab.Screenshot(t, "overview-dark")
		tab.Navigate(t, h.srv.URL+"/accounts")
		tab.Screenshot(t, "accounts-dark")
		tab.AssertNoConsoleErrors(t, "dark")
	})
}

// With JavaScript off the console still works: plain forms post, and a
// delete goes through without the confirmation the script would ask.
func TestBrowserWithoutJavaScript(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, testutil.TabOptions{NoScript: true, Artifacts: "console"})
	signIn(t, tab, h, adminToken)
	tab.Navigate(t, h.srv.URL+"/messages/"+idQueued)
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form[action="/queue/`+idQueued+`/hold"] button`)))
	if loc, flash := tab.Location(t), tab.Text(t, "p.flash"); loc != h.srv.URL+"/messages/"+idQueued || !strings.Contains(flash, "Hold "+idQueued+": held") {
		t.Errorf("after hold: at %s, %q", loc, flash)
	}
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form[action="/queue/`+idQueued+`/delete"] button`)))
	if loc := tab.Location(t); loc != h.srv.URL+"/queue" {
		t.Errorf("after deleting from its page: at %s, want the queue", loc)
	}
	tab.Screenshot(t, "queue-without-javascript")
	if calls := h.b.st.callLog(); !slices.Equal(calls, []string{"hold " + idQueued, "delete " + idQueued}) {
		t.Errorf("store calls %v", calls)
	}
	if visible := testutil.Eval[bool](t, tab, `!document.querySelector(".autorefresh").hidden`); visible {
		t.Error("the auto-refresh switch shows without JavaScript")
	}
}

// A history search for a sender covers the last 24 hours and says so;
// with Since set to all it finds the older message, and its trail opens.
func TestBrowserHistorySearch(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, viewports[0])
	signIn(t, tab, h, readToken)
	tab.Navigate(t, h.srv.URL+"/history")
	tab.Do(t, chromedp.SendKeys(chromedp.CSS("#h-from"), "crm@"))
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form.search button[type="submit"]`)))
	if results, notice := tab.Text(t, "table.history tbody"), tab.Text(t, "p.notice"); strings.Contains(results, idDelivered) ||
		!strings.Contains(notice, "Searched only the 24h back from now") {
		t.Fatalf("results for crm@ (26 hours old), notice %q:\n%s", notice, results)
	}
	if since := testutil.Eval[string](t, tab, `document.querySelector("#h-since").value`); since != "2026-03-13T09:26:53Z" {
		t.Errorf("the Since field shows %q, want the start of the window applied (2026-03-13T09:26:53Z)", since)
	}
	tab.Screenshot(t, "history-window")
	tab.Do(t, chromedp.SetValue(chromedp.CSS("#h-since"), "all"))
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form.search button[type="submit"]`)))
	if results := tab.Text(t, "table.history tbody"); !strings.Contains(results, idDelivered) || strings.Contains(results, idQueued) {
		t.Fatalf("results for crm@ since all:\n%s", results)
	}
	tab.Screenshot(t, "history-search")
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`a[href="/messages/`+idDelivered+`"]`)))
	if h1 := tab.Text(t, "h1"); h1 != "Message "+idDelivered {
		t.Fatalf("h1 %q", h1)
	}
	trail := tab.Text(t, "table.trail")
	for _, want := range []string{"accepted", "delivered", "<customer@example.org>", "250 2.0.0 OK"} {
		if !strings.Contains(trail, want) {
			t.Errorf("the trail lacks %q:\n%s", want, trail)
		}
	}
	tab.Screenshot(t, "message-trail")
	tab.AssertNoConsoleErrors(t, "history search")
}

// A retry through the queue page's button reaches the store and the page
// shows its outcome; a delete asks first, and a "no" deletes nothing.
func TestBrowserQueueActions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, viewports[0])
	signIn(t, tab, h, adminToken)
	tab.Navigate(t, h.srv.URL+"/queue")
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form[action="/queue/`+idQueued+`/retry"] button`)))
	if flash := tab.Text(t, "p.flash"); !strings.Contains(flash, "Retry "+idQueued+": due now") {
		t.Errorf("flash after retry: %q", flash)
	}
	if calls := h.b.st.callLog(); !slices.Equal(calls, []string{"retry " + idQueued}) {
		t.Fatalf("store calls %v", calls)
	}
	tab.Screenshot(t, "queue-after-retry")

	answer := make(chan bool, 1)
	dialogs := chromedp.Events(tab.Ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			accept := <-answer
			if ev.Type != page.DialogTypeConfirm || !strings.Contains(ev.Message, "Delete message "+idHeld) {
				accept = false
				t.Errorf("dialog %s %q", ev.Type, ev.Message)
			}
			_, _ = chromedp.Call(tab.Ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: accept})
		}
	}()
	deleteButton := chromedp.CSS(`form[action="/queue/` + idHeld + `/delete"] button`)
	answer <- false
	tab.Do(t, chromedp.Click(deleteButton))
	testutil.WaitFor(t, 5*time.Second, "the dialog answered", func() bool { return len(answer) == 0 })
	if calls := h.b.st.callLog(); len(calls) != 1 {
		t.Fatalf("a refused confirmation deleted: %v", calls)
	}
	answer <- true
	tab.AndWait(t, chromedp.Click(deleteButton))
	if flash := tab.Text(t, "p.flash"); !strings.Contains(flash, "Delete "+idHeld+": deleted without a bounce") {
		t.Errorf("flash after delete: %q", flash)
	}
	if calls := h.b.st.callLog(); !slices.Equal(calls, []string{"retry " + idQueued, "delete " + idHeld}) {
		t.Errorf("store calls %v", calls)
	}
	tab.AssertNoConsoleErrors(t, "queue actions")
	h.wantAudit("action=queue.retry", "outcome=done", "via=console")
	h.wantAudit("action=queue.delete", "outcome=done", "via=console")
}

// The read scope sees no action, and a form forged in its page is
// refused by the server.
func TestBrowserReadScope(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, viewports[0])
	signIn(t, tab, h, readToken)
	for _, path := range []string{"/queue", "/messages/" + idQueued, "/system"} {
		tab.Navigate(t, h.srv.URL+path)
		if n := testutil.Eval[int](t, tab, `document.querySelectorAll("main form[method=post], .actions").length`); n != 0 {
			t.Errorf("%s: the read scope sees %d action forms", path, n)
		}
	}
	tab.Navigate(t, h.srv.URL+"/queue")
	tab.AssertNoConsoleErrors(t, "read scope")
	tab.AndWait(t, chromedp.Evaluate[chromedp.Void](`(function () {
		var f = document.createElement("form");
		f.method = "post";
		f.action = "/queue/`+idQueued+`/retry";
		var c = document.querySelector("input[name=csrf]").cloneNode();
		f.appendChild(c);
		document.body.appendChild(f);
		f.submit();
	})()`))
	if text := tab.Text(t, "main"); !strings.Contains(text, "You signed in with the read token") {
		t.Errorf("forged retry:\n%s", text)
	}
	if calls := h.b.st.callLog(); len(calls) != 0 {
		t.Errorf("the read scope acted: %v", calls)
	}
	h.wantAudit("action=queue.retry", "outcome=forbidden", "scope=read", "via=console")
}

// Without a session, a page sends the browser to the login page, and the
// API answers 401.
func TestBrowserUnauthenticated(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, viewports[0])
	resp, err := chromedp.Run(tab.Ctx, chromedp.NavigateResponse(h.srv.URL+"/queue?state=held"))
	if err != nil {
		t.Fatal(err)
	}
	if loc := tab.Location(t); loc != h.srv.URL+"/login?next=%2Fqueue%3Fstate%3Dheld" || resp.Status != http.StatusOK {
		t.Errorf("unauthenticated /queue: %d at %s", resp.Status, loc)
	}
	tab.AssertNoConsoleErrors(t, "login redirect")
	resp, err = chromedp.Run(tab.Ctx, chromedp.NavigateResponse(h.srv.URL+"/api/v1/accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusUnauthorized || !strings.Contains(tab.Text(t, "body"), "bearer token is required") {
		t.Errorf("unauthenticated API: %d %s", resp.Status, tab.Text(t, "body"))
	}
}

// The keyboard alone reaches the search form (the skip link first, with
// a visible focus ring) and Enter submits it.
func TestBrowserKeyboard(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, viewports[0])
	signIn(t, tab, h, readToken)
	tab.Navigate(t, h.srv.URL+"/history")
	tab.Do(t, chromedp.KeyEvent(kb.Tab))
	if got := testutil.Eval[string](t, tab, `document.activeElement.className + " " + getComputedStyle(document.activeElement).outlineStyle`); got != "skip solid" {
		t.Errorf("first Tab: focus on %q, want the skip link with a solid outline", got)
	}
	for range 30 {
		if testutil.Eval[string](t, tab, "document.activeElement.id") == "h-from" {
			break
		}
		tab.Do(t, chromedp.KeyEvent(kb.Tab))
	}
	if id := testutil.Eval[string](t, tab, "document.activeElement.id"); id != "h-from" {
		t.Fatalf("Tab never reached the sender field (at %q)", id)
	}
	tab.Do(t, chromedp.KeyEvent("scanner"))
	tab.AndWait(t, chromedp.KeyEvent(kb.Enter))
	if loc := tab.Location(t); !strings.Contains(loc, "from=scanner") {
		t.Errorf("Enter led to %s", loc)
	}
	if results := tab.Text(t, "table.history tbody"); !strings.Contains(results, idQueued) || strings.Contains(results, idDelivered) {
		t.Errorf("results for scanner:\n%s", results)
	}
	tab.AssertNoConsoleErrors(t, "keyboard")
}

// refreshWatch counts, in every page the tab loads from now on, the
// timers console.js sets for an auto-refresh (its 30 s reload), so that
// a test sees whether a page would reload without waiting for it.
const refreshWatch = `(function () {
  window.refreshTimers = 0;
  var setTimeout = window.setTimeout;
  window.setTimeout = function (fn, ms) {
    if (ms === 30000) window.refreshTimers++;
    return setTimeout.apply(window, arguments);
  };
})();`

// With auto-refresh switched on, the overview, accounts, queue, system
// and message pages schedule their reload; History (its searches are
// expensive) and error pages (a search stopped at its deadline, say)
// never do, so a forgotten tab does not repeat a search forever.
func TestBrowserAutoRefresh(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tab := testutil.NewTab(t, viewports[0])
	if _, err := chromedp.Call(tab.Ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: refreshWatch}); err != nil {
		t.Fatal(err)
	}
	signIn(t, tab, h, readToken)
	tab.Do(t, chromedp.Click(chromedp.CSS("#autorefresh")))
	if on := testutil.Eval[string](t, tab, `localStorage.getItem("oauthrelay.autorefresh")`); on != "on" {
		t.Fatalf("the switch stored %q", on)
	}
	tests := []struct {
		path    string
		refresh bool
	}{
		{"/", true},
		{"/accounts", true},
		{"/queue", true},
		{"/system", true},
		{"/messages/" + idQueued, true},
		{"/history", false},
		{"/history?from=crm", false},
		{"/history?since=soon", false},
		{"/nowhere", false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			tab.Navigate(t, h.srv.URL+tc.path)
			if n := testutil.Eval[int](t, tab, "window.refreshTimers"); (n > 0) != tc.refresh {
				t.Errorf("%d reloads scheduled, want any: %v", n, tc.refresh)
			}
		})
	}
	for _, e := range tab.ConsoleErrors(t) {
		if !strings.Contains(e, "the server responded with a status of 4") { // the error pages' own status
			t.Errorf("console error: %s", e)
		}
	}
}
