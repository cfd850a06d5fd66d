package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Overrides are command-line settings applied on top of the files, before
// validation, so that they are checked like everything else.
type Overrides struct {
	// Host and Port replace the host and port of the first listener.
	Host string
	Port int
	// GlobalConcurrency caps concurrent sessions (0: keep the file's value).
	GlobalConcurrency int
	DryRun            bool
	// ClientsOptional accepts a configuration without client blocks: the
	// account commands set up and test upstream accounts before any local
	// client exists. Serving needs at least one.
	ClientsOptional bool
}

// Loaded is the result of reading a configuration: the config when it is
// valid, every diagnostic, and the parsed files (for source snippets when
// diagnostics are printed on a terminal).
type Loaded struct {
	Config      *Config
	Diagnostics hcl.Diagnostics
	Files       map[string]*hcl.File
}

// Load reads a file, or every *.hcl file of a directory in name order merged
// as one body (like Terraform), and returns the validated configuration.
// Config is nil whenever Diagnostics has errors.
func Load(path string, ov Overrides) Loaded {
	files, diags := sourceFiles(path)
	if diags.HasErrors() {
		return Loaded{Diagnostics: diags}
	}
	p := hclparse.NewParser()
	var parsed []*hcl.File
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read configuration file", Detail: err.Error(), Subject: &hcl.Range{Filename: f}})
			continue
		}
		file, d := p.ParseHCL(src, f)
		diags = append(diags, d...)
		if file != nil {
			parsed = append(parsed, file)
		}
	}
	if diags.HasErrors() {
		return Loaded{Diagnostics: diags, Files: p.Files()}
	}
	cfg, d := decode(parsed, ov)
	diags = append(diags, d...)
	sortDiagnostics(diags)
	if diags.HasErrors() {
		cfg = nil
	} else {
		cfg.Files = files
	}
	return Loaded{Config: cfg, Diagnostics: diags, Files: p.Files()}
}

// sortDiagnostics orders diagnostics by position, so the output reads top
// to bottom like the files.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		}
		return a.Start.Column < b.Start.Column
	})
}

func sourceFiles(path string) ([]string, hcl.Diagnostics) {
	fail := func(summary, detail string) ([]string, hcl.Diagnostics) {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &hcl.Range{Filename: path}}}
	}
	st, err := os.Stat(path)
	if err != nil {
		return fail("Cannot read configuration", err.Error())
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	matches, err := filepath.Glob(filepath.Join(path, "*.hcl"))
	if err != nil {
		return fail("Cannot list configuration directory", err.Error())
	}
	if len(matches) == 0 {
		return fail("No configuration files", fmt.Sprintf("The directory %s contains no *.hcl files.", path))
	}
	sort.Strings(matches)
	return matches, nil
}

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "server"},
		{Type: "telemetry"},
		{Type: "vault"},
		{Type: "store"},
		{Type: "queue"},
		{Type: "admin"},
		{Type: "listener", LabelNames: []string{"name"}},
		{Type: "provider", LabelNames: []string{"name"}},
		{Type: "account_group", LabelNames: []string{"name"}},
	},
}

// decoder accumulates diagnostics while turning raw blocks into Config.
type decoder struct {
	diags     hcl.Diagnostics
	hostFiles []hostFile
	// badProviders are provider blocks already reported as invalid, so
	// the groups using them do not add a second, misleading diagnostic.
	badProviders map[string]bool
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: &r})
}

func (d *decoder) warnf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: &r})
}

func decode(files []*hcl.File, ov Overrides) (*Config, hcl.Diagnostics) {
	d := &decoder{}
	cfg := &Config{Providers: map[string]*Provider{}}
	var (
		server, telemetry, vault *hcl.Block
		store, queue, admin      *hcl.Block
		groupBlocks              []*hcl.Block
		seenListener             = map[string]hcl.Range{}
		seenProvider             = map[string]hcl.Range{}
		seenGroup                = map[string]hcl.Range{}
	)
	single := func(prev **hcl.Block, b *hcl.Block) {
		if *prev != nil {
			d.errorf(b.DefRange, "Duplicate "+b.Type+" block", "Only one %s block is allowed; the first is at %s.", b.Type, (*prev).DefRange)
			return
		}
		*prev = b
	}
	unique := func(seen map[string]hcl.Range, b *hcl.Block) bool {
		name := b.Labels[0]
		if first, ok := seen[name]; ok {
			d.errorf(b.LabelRanges[0], "Duplicate "+b.Type+" name", "A %s named %q is already defined at %s.", b.Type, name, first)
			return false
		}
		if strings.TrimSpace(name) == "" {
			d.errorf(b.LabelRanges[0], "Empty "+b.Type+" name", "The %s needs a non-empty name.", b.Type)
			return false
		}
		seen[name] = b.DefRange
		return true
	}
	for _, f := range files {
		content, diags := f.Body.Content(rootSchema)
		d.diags = append(d.diags, diags...)
		for _, b := range content.Blocks {
			switch b.Type {
			case "server":
				single(&server, b)
			case "telemetry":
				single(&telemetry, b)
			case "vault":
				single(&vault, b)
			case "store":
				single(&store, b)
			case "queue":
				single(&queue, b)
			case "admin":
				single(&admin, b)
			case "listener":
				if unique(seenListener, b) {
					if l := d.listener(b); l != nil {
						cfg.Listeners = append(cfg.Listeners, l)
					}
				}
			case "provider":
				if unique(seenProvider, b) {
					if p := d.provider(b); p != nil {
						cfg.Providers[p.Name] = p
					}
				}
			case "account_group":
				if unique(seenGroup, b) {
					groupBlocks = append(groupBlocks, b)
				}
			}
		}
	}
	cfg.Server = d.server(server, ov)
	cfg.Telemetry = d.telemetry(telemetry)
	if vault != nil {
		cfg.Vault = d.vault(vault)
	}
	if store != nil {
		cfg.Store = d.store(store, vault != nil)
	}
	cfg.Queue = d.queue(queue, store != nil)
	if admin != nil {
		cfg.Admin = d.admin(admin)
	}
	d.applyListenerOverrides(cfg, ov)
	d.checkListeners(cfg.Listeners)
	d.checkDelivery(cfg.Listeners, store != nil)
	accountsSeen := map[string]hcl.Range{}
	clientsSeen := map[string]hcl.Range{}
	for _, b := range groupBlocks {
		if g := d.group(b, cfg.Providers, accountsSeen, clientsSeen); g != nil {
			cfg.Groups = append(cfg.Groups, g)
		}
	}
	d.checkSendersAcrossGroups(cfg.Groups)
	d.checkNetworks(cfg.Clients())
	if len(cfg.Listeners) == 0 && !d.diags.HasErrors() {
		d.errorf(firstRange(files), "No listener", "Declare at least one listener block, such as listener \"submission\" { address = \"127.0.0.1:587\" }.")
	}
	cfg.hostFiles = d.hostFiles
	if cfg.Vault == nil {
		for _, ref := range cfg.SecretRefs() {
			if ref.Scheme == SecretVault {
				d.errorf(ref.Range, "Vault reference without a vault block", "%s needs a vault block that says how to reach and log in to Vault.", ref)
			}
		}
	}
	if len(cfg.Clients()) == 0 && !ov.ClientsOptional && !d.diags.HasErrors() {
		d.errorf(firstRange(files), "No client can authenticate", "Declare at least one client block inside an account_group, such as client \"app\" { password_hash = \"...\" } (see oauthrelay hash-password); without one every AUTH is refused.")
	}
	return cfg, d.diags
}

func firstRange(files []*hcl.File) hcl.Range {
	if len(files) > 0 {
		if sb, ok := files[0].Body.(*hclsyntax.Body); ok {
			return hcl.Range{Filename: sb.SrcRange.Filename, Start: sb.SrcRange.Start, End: sb.SrcRange.Start}
		}
	}
	return hcl.Range{}
}

// attrRange returns the range of an attribute's value, or of the block body
// when the attribute is absent, so a diagnostic always points somewhere.
func attrRange(body hcl.Body, name string, fallback hcl.Range) hcl.Range {
	if sb, ok := body.(*hclsyntax.Body); ok {
		if a, ok := sb.Attributes[name]; ok {
			return a.Expr.Range()
		}
	}
	return fallback
}

// itemRange returns the range of the i-th item of a list attribute's
// value, or the whole value's range when it is not a literal list.
func itemRange(body hcl.Body, name string, i int, fallback hcl.Range) hcl.Range {
	at := attrRange(body, name, fallback)
	sb, ok := body.(*hclsyntax.Body)
	if !ok || sb.Attributes[name] == nil {
		return at
	}
	items, diags := hcl.ExprList(sb.Attributes[name].Expr)
	if diags.HasErrors() || i >= len(items) {
		return at
	}
	return items[i].Range()
}

func hasAttr(body hcl.Body, name string) bool {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return false
	}
	_, ok = sb.Attributes[name]
	return ok
}

// nestedBlockRanges returns the definition ranges of the nested blocks of
// one type in source order, the order gohcl decodes them in.
func nestedBlockRanges(body hcl.Body, typ string) []hcl.Range {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	var out []hcl.Range
	for _, b := range sb.Blocks {
		if b.Type == typ {
			if len(b.LabelRanges) > 0 {
				out = append(out, b.LabelRanges[0])
			} else {
				out = append(out, b.DefRange())
			}
		}
	}
	return out
}

// duration parses an optional duration attribute, returning def when absent.
func (d *decoder) duration(body hcl.Body, name, value string, def hcl.Range, dflt time.Duration) time.Duration {
	if value == "" {
		if hasAttr(body, name) {
			d.errorf(attrRange(body, name, def), "Invalid duration", "%s must not be empty; use a value such as \"30s\".", name)
		}
		return dflt
	}
	v, err := parseDuration(value)
	if err != nil {
		d.errorf(attrRange(body, name, def), "Invalid duration", "%s: %v", name, err)
		return dflt
	}
	return v
}

// secret parses an optional secret attribute.
func (d *decoder) secret(body hcl.Body, name string, value *string, def hcl.Range) SecretRef {
	if value == nil {
		return SecretRef{}
	}
	rng := attrRange(body, name, def)
	ref, err := ParseSecretRef(*value, rng)
	if err != nil {
		d.errorf(rng, "Invalid secret reference", "%s: %v", name, err)
		return SecretRef{}
	}
	return ref
}

func (d *decoder) nonNegative(body hcl.Body, name string, v int, def hcl.Range) int {
	if v < 0 {
		d.errorf(attrRange(body, name, def), "Invalid value", "%s must not be negative.", name)
		return 0
	}
	return v
}

func (d *decoder) oneOf(body hcl.Body, name, value string, def hcl.Range, allowed ...string) bool {
	for _, a := range allowed {
		if value == a {
			return true
		}
	}
	d.errorf(attrRange(body, name, def), "Invalid "+name, "%s must be one of %s; got %q.", name, quoteList(allowed), value)
	return false
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
