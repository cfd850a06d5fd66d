package upstream

// PoolStats is a pool's connections now, for the operator console.
type PoolStats struct {
	Open int // idle + in use + being dialled
	Idle int
	Max  int // 0: no cap
	// Waiting counts messages waiting for a connection.
	Waiting int
}

// Stats reports the pool's connections.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Open: p.open, Idle: len(p.idle), Max: p.set.MaxConnections, Waiting: len(p.waiters)}
}
