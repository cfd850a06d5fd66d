package upstream

import "github.com/oauthrelay/oauthrelay/internal/transport"

// envelopeReplies are the provider's answers to an envelope sent at once.
type envelopeReplies struct {
	// rcpts holds each recipient's refusal (nil: accepted), in order.
	rcpts    []error
	accepted int
	// dataSent: DATA went with the envelope; the connection then either
	// awaits the message (Conn.inData) or holds DATA's refusal
	// (Conn.dataRefused) for Data to report.
	dataSent bool
}

// sendEnvelope starts a transaction with MAIL and every recipient. When
// the provider offers PIPELINING (RFC 2920), MAIL, the RCPTs and, with
// data, DATA leave in one write and their replies are read in order;
// otherwise one command at a time, as Begin and AddRcpt send them, and
// DATA is left to Data. The error is MAIL's failure or a broken
// connection, which ends the attempt; a recipient's refusal is its own.
func (c *Conn) sendEnvelope(from string, mail transport.MailOptions, rcpts []acceptedRcpt, data bool) (envelopeReplies, error) {
	c.dataRefused = nil
	if err := c.awaitingMessage(StageMail); err != nil {
		return envelopeReplies{}, err
	}
	if !c.c.has("PIPELINING") {
		return c.envelopeStepwise(from, mail, rcpts)
	}
	mailLine, dsn, err := c.mailLine(from, mail)
	if err != nil {
		return envelopeReplies{}, err
	}
	// Recipient lines depend on MAIL's parameters (rcptParams).
	c.mail = mail
	r := envelopeReplies{rcpts: make([]error, len(rcpts))}
	lines := []string{mailLine}
	var sent []int // the recipients whose RCPT went out
	for i, rc := range rcpts {
		line, err := c.rcptLine(rc.addr, rc.opts)
		if err != nil {
			r.rcpts[i] = err
			continue
		}
		lines = append(lines, line)
		sent = append(sent, i)
	}
	// RFC 2920 §3.1: DATA may end the group; whether it is refused
	// because no recipient was accepted is read from its reply.
	r.dataSent = data && len(sent) > 0
	if r.dataSent {
		lines = append(lines, "DATA")
	}
	if err := c.c.sendGroup(lines...); err != nil {
		return r, c.fail(StageMail, err)
	}
	if _, err := c.c.readReply(250); err != nil {
		// Without a transaction the provider refuses the RCPTs and DATA
		// behind MAIL too; their replies are read so that the next
		// command meets its own (RFC 2920 §3.1: check every reply).
		failure := c.fail(StageMail, err)
		c.skipReplies(len(lines)-1, r.dataSent)
		return r, failure
	}
	c.mailAccepted(mail, dsn)
	for _, i := range sent {
		if err := c.rcptReply(); err != nil {
			if c.broken {
				return r, err
			}
			r.rcpts[i] = err
			continue
		}
		r.accepted++
	}
	if r.dataSent {
		if err := c.dataReply(r.accepted); err != nil {
			return r, err
		}
	}
	return r, nil
}

// envelopeStepwise is sendEnvelope without PIPELINING.
func (c *Conn) envelopeStepwise(from string, mail transport.MailOptions, rcpts []acceptedRcpt) (envelopeReplies, error) {
	r := envelopeReplies{rcpts: make([]error, len(rcpts))}
	if err := c.mailWith(from, mail); err != nil {
		return r, err
	}
	for i, rc := range rcpts {
		if err := c.rcptWith(rc.addr, rc.opts); err != nil {
			if c.broken {
				return r, err
			}
			r.rcpts[i] = err
			continue
		}
		r.accepted++
	}
	return r, nil
}

// dataReply reads the reply to a pipelined DATA. With recipients
// accepted, 354 leaves the connection waiting for the message and a
// refusal is kept for Data. Without any, the provider should refuse DATA;
// should it answer 354 all the same, a lone dot ends the empty message,
// which it must not deliver (RFC 2920 §3.1, §3.2). The error is a broken
// connection.
func (c *Conn) dataReply(accepted int) error {
	_, err := c.c.readReply(354)
	if accepted > 0 {
		if err == nil {
			c.inData = true
			return nil
		}
		c.dataRefused = c.fail(StageData, err)
		if c.broken {
			return c.dataRefused
		}
		return nil
	}
	if err == nil {
		if err := c.c.sendGroup("."); err != nil {
			return c.fail(StageData, err)
		}
		_, err = c.c.readReply(250)
	}
	if lost(err) {
		return c.fail(StageData, err)
	}
	return nil
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
