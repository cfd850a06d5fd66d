package admin

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// The console's pages are server-rendered (html/template escapes every
// value for its context) with one stylesheet and one small script,
// embedded: no build step, nothing fetched from elsewhere, works offline.
//
//go:embed web
var webFS embed.FS

// pageNames are the page templates, each rendered inside web/layout.html.
var pageNames = []string{"overview", "accounts", "queue", "history", "message", "system", "login", "error"}

type pages struct {
	byName map[string]*template.Template
}

func parsePages(s *Server) *pages {
	funcs := template.FuncMap{
		"utc":     func(t time.Time) string { return Stamp(t, time.UTC) },
		"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"rel":     func(t time.Time) string { return Relative(t, s.now()) },
		"now":     func() string { return s.now().UTC().Format(time.RFC3339) },
		"pct":     func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
		"size":    formatSize,
		"seconds": func(n int64) string { return Span(time.Duration(n) * time.Second) },
		"clip":    Clip,
		"join":    strings.Join,
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		// The templates are part of the binary: a parse error is a
		// programming error that every test run finds.
		p.byName[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/pages/"+name+".html"))
	}
	return p
}

// pageData is what the layout shows around every page.
type pageData struct {
	Title    string
	Hostname string
	Signed   bool // signed in: the navigation and the session bar are shown
	NavItems []navItem
	Scope    string
	Admin    bool
	CSRF     string
	Flash    *flash
	Subjects bool // the store keeps subjects (history_subjects)
	// Refresh: the page offers auto-refresh (refreshing).
	Refresh bool
	Body    any
}

// refreshing are the pages that offer auto-refresh (console.js reloads
// a page only when it has the switch): live state that is cheap to read
// again. Not History, whose searches are the expensive reads
// (searchlimit.go), and no page that failed (status other than 200): a
// forgotten tab would repeat a search stopped at its deadline, or a
// request the store refused, every 30 seconds for as long as it stays
// open.
var refreshing = map[string]bool{"overview": true, "accounts": true, "queue": true, "system": true, "message": true}

type navItem struct {
	Href, Label string
	Current     bool
}

var navigation = []navItem{
	{Href: "/", Label: "Overview"}, {Href: "/accounts", Label: "Accounts"}, {Href: "/queue", Label: "Queue"},
	{Href: "/history", Label: "History"}, {Href: "/system", Label: "System"},
}

// render writes page name with status; v is nil for a visitor who is
// not signed in (the login page, an error before sign-in). Those pages
// are static: they never call the Backend, whose calls take the
// runtime's locks, so that a stranger cannot contend with a reload; and
// they tell a stranger nothing of the relay (not even its host name).
func (s *Server) render(w http.ResponseWriter, v *visit, status int, name, title, nav string, body any) {
	d := pageData{Title: title, Body: body}
	if v != nil {
		info := s.b.Info()
		d.Hostname, d.Subjects = info.Hostname, info.HistorySubjects
		d.Signed, d.Scope, d.Admin, d.CSRF = true, v.p.scope.String(), v.p.scope >= scopeAdmin, v.sess.csrf
		d.Flash = s.sessions.takeFlash(v.sess)
		d.Refresh = refreshing[name] && status == http.StatusOK
		for _, item := range navigation {
			item.Current = item.Href == nav
			d.NavItems = append(d.NavItems, item)
		}
	}
	var buf bytes.Buffer
	if err := s.pages.byName[name].ExecuteTemplate(&buf, "layout", d); err != nil {
		s.log.Error("rendering a console page", "page", name, "error", err)
		http.Error(w, "the page could not be rendered; see the relay's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage is a page that says what went wrong and where to go back.
type errorPage struct {
	Text, Back, BackLabel string
}

func (s *Server) renderError(w http.ResponseWriter, v *visit, status int, text string) {
	s.render(w, v, status, "error", http.StatusText(status), "", errorPage{Text: text, Back: "/", BackLabel: "Back to the overview"})
}

func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.Handle("GET /{$}", s.page(s.overviewPage))
	mux.Handle("GET /accounts", s.page(s.accountsPage))
	mux.Handle("GET /queue", s.page(s.queuePageView))
	mux.Handle("POST /queue/{id}/{action}", s.page(s.queueActPage))
	mux.Handle("GET /history", s.page(s.historyPage))
	mux.Handle("GET /messages/{id}", s.page(s.messagePage))
	mux.Handle("GET /system", s.page(s.systemPage))
	mux.Handle("POST /system/reload", s.page(s.reloadPage))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.Handle("POST /logout", s.page(s.logout))
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", s.forOperators(http.StripPrefix("/static/", http.FileServerFS(static))))
	mux.Handle("GET /favicon.ico", s.forOperators(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})))
	mux.Handle("/", s.page(func(w http.ResponseWriter, r *http.Request, v *visit) {
		s.renderError(w, v, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	}))
}

func formatSize(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d bytes", n)
	case n < 1024*1024:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1024*1024))
}
