package config

import (
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// DefaultMaxMailboxes bounds the mailboxes a domain-wide account serves at
// once (account "*@example.com" { max_mailboxes }).
const DefaultMaxMailboxes = 1000

// domainPattern returns the domain of a domain-wide account's label
// ("*@example.com", lower-cased), and whether the label is one. "*" is a
// valid local part (RFC 5322 atext), but no mailbox worth relaying for is
// called that; the label is always read as the pattern.
func domainPattern(label string) (string, bool) {
	domain, ok := strings.CutPrefix(label, "*@")
	if !ok {
		return "", false
	}
	return domain, hostDomain(domain)
}

// hostDomain reports whether s is a domain name of letters, digits and
// hyphens (RFC 1123 §2.1; internationalised names in their A-label form),
// with at least two labels: no wildcards, no address literals.
func hostDomain(s string) bool {
	return strings.Count(s, ".") >= 1 && hostName(s)
}

// hostName reports whether s is a host name of one or more labels of
// lower-case letters, digits and hyphens (RFC 1123 §2.1).
func hostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// IsDomain reports whether the account is domain-wide: it sends as any
// mailbox of Domain (README "Domain-wide accounts").
func (a *Account) IsDomain() bool { return a.Domain != "" }

// Covers reports whether the account sends as addr (lower case): its
// address, or for a domain-wide account any address of its domain.
func (a *Account) Covers(addr string) bool {
	if !a.IsDomain() {
		return a.Address == addr
	}
	at := strings.LastIndexByte(addr, '@')
	return at > 0 && addr[at+1:] == a.Domain && !strings.HasPrefix(addr, "*@")
}

// Account returns the group's account that sends as addr (lower case):
// the account of that address, else the domain-wide account of its
// domain, else nil.
func (g *AccountGroup) Account(addr string) *Account {
	var domain *Account
	for _, a := range g.Accounts {
		switch {
		case a.Address == addr:
			return a
		case a.IsDomain() && a.Covers(addr):
			domain = a
		}
	}
	return domain
}

// domainAccount checks what only a domain-wide account has: a credential
// that may send as any mailbox of the domain.
func (d *decoder) domainAccount(g *AccountGroup, a *Account, ra rawAccount, labelRange hcl.Range) {
	a.MaxMailboxes = DefaultMaxMailboxes
	if ra.MaxMailboxes != nil {
		if *ra.MaxMailboxes < 1 {
			d.errorf(attrRange(ra.Body, "max_mailboxes", labelRange), "Invalid value", "max_mailboxes must be at least 1.")
		} else {
			a.MaxMailboxes = *ra.MaxMailboxes
		}
	}
	if !a.IsDomain() {
		if ra.MaxMailboxes != nil {
			d.errorf(attrRange(ra.Body, "max_mailboxes", labelRange), "Unexpected attribute", "max_mailboxes only applies to a domain-wide account such as \"*@example.com\".")
		}
		return
	}
	if g.Flow == FlowRefreshToken {
		d.errorf(labelRange, "Domain-wide account needs an application credential", "Account %q sends as every mailbox of %s, which needs a credential valid for any of them: flow = \"client_credentials\" (Microsoft app-only) or flow = \"service_account\" (Google domain-wide delegation). A refresh token belongs to one mailbox: declare each mailbox as an account instead.", a.Address, a.Domain)
	}
}

// checkSendersAcrossGroups refuses, in a client's allowed_senders and
// send_as, an address that a domain-wide account of the client's group
// covers but that is declared as an account of another group: an address
// belongs to one group only, and only that group's clients send as it.
func (d *decoder) checkSendersAcrossGroups(groups []*AccountGroup) {
	owner := map[string]*AccountGroup{}
	for _, g := range groups {
		for _, a := range g.Accounts {
			if !a.IsDomain() {
				owner[a.Address] = g
			}
		}
	}
	for _, g := range groups {
		for _, c := range g.Clients {
			check := func(addr string, rng hcl.Range, what string) {
				if o := owner[addr]; o != nil && o != g {
					d.errorf(rng, "Sender is not an account of the group", "Client %q %s %q, which is not an account of group %q but of group %q; only that group's clients can send as it (an address belongs to one group).", c.Name, what, addr, g.Name, o.Name)
				}
			}
			if c.AllowedSendersRange != (hcl.Range{}) {
				for _, s := range c.AllowedSenders {
					check(s, c.AllowedSendersRange, "may send as")
				}
			}
			if c.SendAs != "" {
				check(c.SendAs, c.SendAsRange, "sends as")
			}
		}
	}
}
