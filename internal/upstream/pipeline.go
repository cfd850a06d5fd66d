package upstream

import "github.com/oauthrelay/oauthrelay/internal/transport"

// envelopeReplies are the provider's answers to an envelope sent at once.
type envelopeReplies struct {
	// mailed: the provider accepted MAIL.
	mailed bool
	// rcpts holds each recipient's refusal (nil: accepted), in order.
	// The first answered of them have their verdict; a connection that
	// breaks leaves the rest unanswered.
	rcpts    []error
	answered int
}

// verdicts are the recipients' verdicts read so far.
func (r envelopeReplies) verdicts() []error { return r.rcpts[:r.answered] }

// sendEnvelope starts a transaction with MAIL and every recipient. When
// the provider offers PIPELINING (RFC 2920), MAIL, the RCPTs and, with
// data, DATA leave in one write and their replies are read in order;
// otherwise one command at a time, as Begin and AddRcpt send them, and
// DATA is left to Data. The error is MAIL's failure or a broken
// connection, which ends the attempt; a recipient's refusal is its own,
// and the verdicts read before a connection broke stand.
func (c *Conn) sendEnvelope(from string, mail transport.MailOptions, rcpts []acceptedRcpt, data bool) (envelopeReplies, error) {
	c.dataRefused = nil
	if err := c.awaitingMessage(StageMail); err != nil {
		return envelopeReplies{}, err
	}
	if !c.c.has("PIPELINING") {
		if err := c.mailWith(from, mail); err != nil {
			return envelopeReplies{}, err
		}
		r, err := c.rcptsStepwise(rcpts)
		r.mailed = true
		return r, err
	}
	mailLine, dsn, err := c.mailLine(from, mail)
	if err != nil {
		return envelopeReplies{}, err
	}
	// Recipient lines depend on MAIL's parameters (rcptParams).
	c.mail = mail
	g := c.rcptGroup(rcpts, data)
	sent := min(len(g.lines), maxUnansweredCommands-1)
	if err := c.c.sendGroup(append([]string{mailLine}, g.lines[:sent]...)...); err != nil {
		return envelopeReplies{}, c.fail(StageMail, err)
	}
	if _, err := c.c.readReply(250); err != nil {
		// Without a transaction the provider refuses the RCPTs and DATA
		// behind MAIL too; their replies are read so that the next
		// command meets its own (RFC 2920 §3.1: check every reply).
		failure := c.fail(StageMail, err)
		c.skipReplies(sent, g.data && sent == len(g.lines))
		return envelopeReplies{}, failure
	}
	c.mailAccepted(mail, dsn)
	err = c.readGroup(&g, 0, sent)
	g.r.mailed = true
	return g.r, err
}

// maxUnansweredCommands bounds the commands a pipelined envelope has sent
// without reading their replies. RFC 2920 §3.1: a client that writes more
// than the network buffers hold before it reads can deadlock with a
// server blocked on writing its replies; a listener's max_recipients may
// be far above the providers' 100 (Google) or 500 (Microsoft).
const maxUnansweredCommands = 100

// addRcpts goes on with a transaction the connection holds already, with
// held recipients accepted in it: more recipients and, with data, DATA,
// sent as sendEnvelope sends them.
func (c *Conn) addRcpts(rcpts []acceptedRcpt, data bool, held int) (envelopeReplies, error) {
	c.dataRefused = nil
	if err := c.awaitingMessage(StageRcpt); err != nil {
		return envelopeReplies{}, err
	}
	if !c.c.has("PIPELINING") {
		return c.rcptsStepwise(rcpts)
	}
	g := c.rcptGroup(rcpts, data)
	return g.r, c.readGroup(&g, held, 0)
}

// rcptsStepwise sends the recipients one at a time (no PIPELINING).
func (c *Conn) rcptsStepwise(rcpts []acceptedRcpt) (envelopeReplies, error) {
	r := envelopeReplies{rcpts: make([]error, len(rcpts))}
	for i, rc := range rcpts {
		if err := c.rcptWith(rc.addr, rc.opts); err != nil {
			if c.broken {
				return r, err
			}
			r.rcpts[i] = err
		}
		r.answered = i + 1
	}
	return r, nil
}

// rcptGroup is the RCPT commands, and DATA, of one pipelined write.
type rcptGroup struct {
	lines []string
	// sent[i]: recipient i's RCPT is among lines; otherwise the relay
	// refused it itself (r.rcpts[i]).
	sent []bool
	data bool // DATA ends the group
	r    envelopeReplies
}

// rcptGroup builds the group for rcpts. RFC 2920 §3.1: DATA may end it;
// whether it is refused because no recipient was accepted is read from
// its reply.
func (c *Conn) rcptGroup(rcpts []acceptedRcpt, data bool) rcptGroup {
	g := rcptGroup{sent: make([]bool, len(rcpts)), r: envelopeReplies{rcpts: make([]error, len(rcpts))}}
	for i, rc := range rcpts {
		line, err := c.rcptLine(rc.addr, rc.opts)
		if err != nil {
			g.r.rcpts[i] = err
			continue
		}
		g.lines = append(g.lines, line)
		g.sent[i] = true
	}
	g.data = data && len(g.lines) > 0
	if g.data {
		g.lines = append(g.lines, "DATA")
	}
	return g
}

// readGroup reads the replies to g's commands in order, the transaction
// holding held accepted recipients before them; the first sent of g's
// lines were written already, and the rest leave maxUnansweredCommands
// at a time once the replies to those before them are read. The error
// is a broken connection; the verdicts read before it stand
// (g.r.answered). A broken connection at DATA is no error: every
// recipient has its verdict, and Data reports DATA's failure (see
// dataReply).
func (c *Conn) readGroup(g *rcptGroup, held, sent int) error {
	accepted, line := held, 0
	next := func(stage Stage) error {
		if line == sent {
			n := min(len(g.lines), sent+maxUnansweredCommands)
			if err := c.c.sendGroup(g.lines[sent:n]...); err != nil {
				return c.fail(stage, err)
			}
			sent = n
		}
		line++
		return nil
	}
	for i, isSent := range g.sent {
		if isSent {
			if err := next(StageRcpt); err != nil {
				return err
			}
			err := c.rcptReply()
			if err != nil && c.broken {
				return err
			}
			if g.r.rcpts[i] = err; err == nil {
				accepted++
			}
		}
		g.r.answered = i + 1
	}
	if g.data {
		if err := next(StageData); err != nil {
			if accepted > 0 {
				c.dataRefused = err // as a lost reply to DATA
			}
			return nil
		}
		c.dataReply(accepted)
	}
	return nil
}

// dataReply reads the reply to a pipelined DATA. With recipients
// accepted, 354 leaves the connection waiting for the message and a
// refusal, the connection's loss included, is kept for Data (which tries
// a lost connection again on another). Without any, the provider should
// refuse DATA; should it answer 354 all the same, a lone dot ends the
// empty message, which it must not deliver (RFC 2920 §3.1, §3.2). Exim,
// for one, answers the DATA of an envelope without a valid recipient
// with a 421 and closes: the connection is dropped, and the transaction
// is over with every recipient's verdict known.
func (c *Conn) dataReply(accepted int) {
	_, err := c.c.readReply(354)
	if accepted > 0 {
		if err == nil {
			c.inData = true
		} else {
			c.dataRefused = c.fail(StageData, err)
		}
		return
	}
	if err == nil {
		if err := c.c.sendGroup("."); err != nil {
			_ = c.fail(StageData, err)
			return
		}
		_, err = c.c.readReply(250)
	}
	if lost(err) {
		_ = c.fail(StageData, err)
	}
}

// lost reports whether err ends the connection: no reply, or 421.
func lost(err error) bool {
	r := replyOf(err)
	return err != nil && (r == nil || r.Code == 421)
}

// skipReplies reads n replies to commands that failed with MAIL, the last
// of them DATA's when data: none of them is counted or kept.
func (c *Conn) skipReplies(n int, data bool) {
	for i := 0; i < n && !c.broken; i++ {
		expect := 250
		if data && i == n-1 {
			expect = 354
		}
		_, err := c.c.readReply(expect)
		// DATA accepted after a refused MAIL: nothing can be trusted.
		c.broken = lost(err) || err == nil && expect == 354
	}
}
