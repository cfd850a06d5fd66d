package main

import (
	"fmt"
	"time"
)

// latencyResult is the second look at store and forward, with the
// sandbox provider answering each message's final dot after a delay:
// real providers take tens to hundreds of milliseconds to accept a
// message, which a client of the relay in direct mode waits for and a
// client of the queue does not. The zero-latency rows measure what the
// relay costs; these measure what the clients see.
type latencyResult struct {
	DataDelay string      `json:"provider_data_delay"`
	Provider  scenario    `json:"provider"`
	Direct    scenario    `json:"relay_direct_mode"`
	Queue     queueResult `json:"queue"`
	label     string      // ends the names of its rows
}

// latencyScenarios measures the provider directly, the relay in direct
// mode and the store-and-forward relay with the provider's delay at DATA
// (-provider-data-delay; 0 skips them).
func (b *bench) latencyScenarios(direct path) error {
	if b.dataDelay <= 0 {
		return nil
	}
	b.sb.SMTP.SetDataDelay(b.dataDelay)
	defer b.sb.SMTP.SetDataDelay(0)
	label := latencyLabel(b.dataDelay)
	res := latencyResult{DataDelay: b.dataDelay.String(), label: label}
	res.Provider = measure(directReuseName+label, b.clients, b.duration, nil, direct.reuse)
	relay, err := b.startDirectRelay()
	if err != nil {
		return err
	}
	res.Direct = measure(relayReuseName+label, b.clients, b.duration, relay, b.relayClient(relay.addr))
	relay.stop()
	res.Direct.RelayRatio = res.Direct.PerSecond / res.Provider.PerSecond
	b.rep.Scenarios = append(b.rep.Scenarios, res.Provider, res.Direct)
	if res.Queue, err = b.queueRows(label, res.Provider, res.Direct); err != nil {
		return err
	}
	b.rep.Latency = &res
	return nil
}

// latencyLabel ends the names of the rows measured with the provider's
// delay at DATA.
func latencyLabel(d time.Duration) string { return fmt.Sprintf(", provider +%s", d) }

// latencyTargets are the queue's goals when the provider takes its time,
// as the zero-latency ones are: each says which delay it assumes.
func latencyTargets(l latencyResult) []target {
	accept, e2e := l.Queue.Accept, l.Queue.EndToEnd
	return []target{
		{fmt.Sprintf("provider answering DATA after %s: queue accept ≥ 1.0× the relay in direct mode", l.DataDelay), fmt.Sprintf("%.2f×", accept.ModeRatio), accept.ModeRatio >= 1},
		{fmt.Sprintf("provider answering DATA after %s: queue end-to-end ≥ 0.5× the relay in direct mode", l.DataDelay), fmt.Sprintf("%.2f×", e2e.ModeRatio), e2e.ModeRatio >= 0.5},
		{fmt.Sprintf("provider answering DATA after %s: no errors, every accepted message delivered", l.DataDelay), fmt.Sprintf("%d errors, %d undelivered", accept.Errors+l.Direct.Errors, l.Queue.Undelivered), accept.Errors+l.Direct.Errors == 0 && l.Queue.Undelivered == 0},
	}
}

func printLatency(l latencyResult) {
	q := l.Queue
	fmt.Printf("\nwith the provider answering DATA after %s (rows \"%s\"): queue to the relay in direct mode: accept %.2f×, end-to-end %.2f×; %d delivered, drained %.2f s after the last 250\n",
		l.DataDelay, l.label, q.Accept.ModeRatio, q.EndToEnd.ModeRatio, q.Delivered, q.DrainSeconds)
}
