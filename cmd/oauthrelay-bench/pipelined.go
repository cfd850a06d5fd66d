package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// pipeClient is a relay client that pipelines (RFC 2920) as Postfix and
// msmtp do: MAIL, RCPT and DATA leave in one write and their replies
// are read together; then the message, then its reply.
type pipeClient struct {
	conn net.Conn
	text *textproto.Conn
}

// clientTimeout bounds each exchange of a pipelining client.
const clientTimeout = 30 * time.Second

func dialPipelined(addr string) (*pipeClient, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &pipeClient{conn: conn, text: textproto.NewConn(conn)}
	auth := base64.StdEncoding.EncodeToString([]byte("\x00bench\x00" + password))
	err = c.exchange("", 220)
	if err == nil {
		err = c.exchange("EHLO bench.local\r\n", 250)
	}
	if err == nil {
		err = c.exchange("AUTH PLAIN "+auth+"\r\n", 235)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// exchange writes out (in one write) and reads a reply for each code.
func (c *pipeClient) exchange(out string, codes ...int) error {
	_ = c.conn.SetDeadline(time.Now().Add(clientTimeout))
	if out != "" {
		if _, err := io.WriteString(c.conn, out); err != nil {
			return err
		}
	}
	for _, code := range codes {
		if _, msg, err := c.text.ReadResponse(code); err != nil {
			return fmt.Errorf("%w (%s)", err, msg)
		}
	}
	return nil
}

func (c *pipeClient) send(from, to, msg string) error {
	if err := c.exchange(fmt.Sprintf("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, to), 250, 250, 354); err != nil {
		return err
	}
	return c.exchange(dotStuffed(msg)+".\r\n", 250)
}

// dotStuffed doubles the dot that starts a line (RFC 5321 §4.5.2); msg
// ends with CRLF.
func dotStuffed(msg string) string {
	if strings.HasPrefix(msg, ".") {
		msg = "." + msg
	}
	return strings.ReplaceAll(msg, "\r\n.", "\r\n..")
}

func (c *pipeClient) quit() {
	_ = c.exchange("QUIT\r\n", 221)
	c.conn.Close()
}

// pipelinedPath sends through the relay at addr with a pipelining client
// per client goroutine, reusing its connection.
func pipelinedPath(addr string) path {
	return path{reuse: func(st *clientState) error {
		if st.piped == nil {
			c, err := dialPipelined(addr)
			if err != nil {
				return err
			}
			st.piped = c
		}
		return st.piped.send(account, "rcpt@example.net", body)
	}}
}
