package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestConsoleInBrowser drives the console of a real relay in headless
// Chromium: an unauthenticated visit is sent to the login page, the
// history search finds a message sent through the relay and opens its
// trail, and a queued message is retried with the queue page's button
// and then delivered. Screenshots go to the artifacts directory.
func TestConsoleInBrowser(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	base := "http://" + h.rt.ConsoleAddr().String()
	sent := idFrom(t, sentIDRE, h.mustSend(appClient, alice, "browser@example.net"))
	h.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	reply, err := testutil.Send(h.rt.ListenerAddr("queued").String(), testutil.Mail{
		User: appClient, Password: h.password, From: bob, To: []string{"scans@example.net"},
		Body: "Subject: Scan 42\r\nMessage-ID: <scan-42@printer.test>\r\n\r\npages\r\n"})
	if err != nil {
		t.Fatal(err)
	}
	queued := idFrom(t, queuedIDRE, reply)
	testutil.WaitFor(t, storeWait, "both messages in the history", func() bool {
		var res apiSearch
		api(t, h, "GET", "/api/v1/messages", consoleReadToken, &res)
		return len(res.Messages) == 2
	})

	tab := testutil.NewTab(t, testutil.TabOptions{Width: 1280, Height: 900, Artifacts: "console"})
	tab.Navigate(t, base+"/queue")
	if loc := tab.Location(t); !strings.HasPrefix(loc, base+"/login") {
		t.Fatalf("an unauthenticated visit to /queue ended at %s, want the login page", loc)
	}
	tab.Do(t, chromedp.SendKeys(chromedp.CSS("#token"), consoleAdminToken))
	tab.AndWait(t, chromedp.Click(chromedp.CSS(`form.login button[type="submit"]`)))

	t.Run("history search", func(t *testing.T) {
		tab.Navigate(t, base+"/history")
		tab.Do(t, chromedp.SendKeys(chromedp.CSS("#h-from"), "alice@"))
		tab.AndWait(t, chromedp.Click(chromedp.CSS(`form.search button[type="submit"]`)))
		results := tab.Text(t, "table.history tbody")
		if !strings.Contains(results, sent) || strings.Contains(results, queued) {
			t.Fatalf("results for alice@:\n%s", results)
		}
		tab.Screenshot(t, "relay-history-search")
		tab.AndWait(t, chromedp.Click(chromedp.CSS(`a[href="/messages/`+sent+`"]`)))
		trail := tab.Text(t, "table.trail")
		for _, want := range []string{"accepted", "delivered", "250"} {
			if !strings.Contains(trail, want) {
				t.Errorf("the trail lacks %q:\n%s", want, trail)
			}
		}
		tab.Screenshot(t, "relay-message-trail")
	})

	t.Run("queue retry", func(t *testing.T) {
		h.sb.SMTP.FailEveryNthData(0, nil)
		tab.Navigate(t, base+"/queue")
		tab.AndWait(t, chromedp.Click(chromedp.CSS(`form[action="/queue/`+queued+`/retry"] button`)))
		if flash := tab.Text(t, "p.flash"); !strings.Contains(flash, queued) {
			t.Errorf("flash after retry: %q", flash)
		}
		tab.Screenshot(t, "relay-queue-retry")
		testutil.WaitFor(t, 20*time.Second, "the retried message delivered", func() bool { return delivered(h, "Scan 42") == 1 })
		var m apiMessage
		testutil.WaitFor(t, storeWait, "the delivery in the history", func() bool {
			api(t, h, "GET", "/api/v1/messages/"+queued, consoleReadToken, &m)
			return m.History != nil && m.History.State == store.StateDelivered
		})
		if !strings.Contains(h.logs.String(), "action=queue.retry") {
			t.Error("the retry is not in the audit log")
		}
	})

	for _, page := range []struct{ path, name string }{{"/", "overview"}, {"/accounts", "accounts"}, {"/system", "system"}} {
		tab.Navigate(t, base+page.path)
		tab.Screenshot(t, "relay-"+page.name)
	}
	tab.AssertNoConsoleErrors(t, "the console of a real relay")
}
