package limits

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func TestSessionLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limit := NewSessionLimit(2)
	ln := limit.Listener(inner, func() string { return "421 4.3.2 busy\r\n" })
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	first, second := <-accepted, <-accepted

	refused := dial()
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(refused).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "421 4.3.2") {
		t.Fatalf("third connection read %q, %v; want a 421 4.3.2", line, err)
	}
	if limit.Rejected() != 1 || limit.InUse() != 2 {
		t.Errorf("rejected=%d inUse=%d", limit.Rejected(), limit.InUse())
	}

	first.Close()
	first.Close() // a double close must not free two slots
	dial()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
	if limit.InUse() != 2 {
		t.Errorf("inUse = %d, want 2", limit.InUse())
	}
	second.Close()
}

func TestLimitChangesAtRuntime(t *testing.T) {
	l := NewSessionLimit(0)
	for i := 0; i < 100; i++ {
		if !l.tryAcquire() {
			t.Fatal("no cap, yet refused")
		}
	}
	l.SetMax(101)
	if !l.tryAcquire() || l.tryAcquire() {
		t.Error("cap of 101 not applied")
	}
	l.SetMax(0)
	if !l.tryAcquire() {
		t.Error("cap not removed")
	}
}
