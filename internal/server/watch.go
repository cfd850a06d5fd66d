package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// configDebounce is how long the configuration must stay unchanged after a
// file event before it is reloaded: editors and `git pull` write several
// files, or one file several times.
const configDebounce = 500 * time.Millisecond

// configWatcher reloads the relay when its configuration files change
// (server { watch_config = true }).
type configWatcher struct {
	w      *fsnotify.Watcher
	cancel context.CancelFunc
	done   chan struct{}
}

// setWatch starts or stops the watcher; called with r.mu held.
func (r *Runtime) setWatch(on bool) {
	if !on || r.opts.ConfigPath == "" {
		if r.watcher != nil {
			r.watcher.stop()
			r.watcher = nil
		}
		return
	}
	if r.watcher != nil {
		return
	}
	w, err := watchConfig(r.opts.ConfigPath, r.log.Named("watch"), func() {
		r.log.Info("configuration files changed; reloading")
		_ = r.Reload(context.Background())
	})
	if err != nil {
		r.log.Error("cannot watch the configuration; reload with SIGHUP instead", "error", err)
		return
	}
	r.watcher = w
}

// watchConfig watches a configuration file (through its directory, since
// editors replace files by renaming) or a directory of *.hcl files.
func watchConfig(path string, log hclog.Logger, onChange func()) (*configWatcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	dir, relevant := path, func(name string) bool { return strings.HasSuffix(name, ".hcl") }
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		dir = filepath.Dir(path)
		relevant = func(name string) bool { return filepath.Clean(name) == path }
	}
	if err := fw.Add(dir); err != nil {
		fw.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cw := &configWatcher{w: fw, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(cw.done)
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				if !relevant(ev.Name) || ev.Op == fsnotify.Chmod {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(configDebounce)
				} else {
					timer.Reset(configDebounce)
				}
				fire = timer.C
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				log.Warn("configuration watch error", "error", err)
			case <-fire:
				fire = nil
				// Reload takes the runtime lock, which stop() may hold while
				// waiting for this goroutine: run it apart.
				go onChange()
			case <-ctx.Done():
				return
			}
		}
	}()
	return cw, nil
}

func (cw *configWatcher) stop() {
	cw.cancel()
	cw.w.Close()
	<-cw.done
}
