package etcdapi

import (
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiff-sh/skiff/server/storage"
)

// watcher is the in-process client's clientv3.Watcher: it reads the
// backend's watches directly. Through the gRPC adapter each watch cost
// seven goroutines (the client's stream and substream loops, the
// adapter's pipe, the server's receive, send and pump loops), and the
// API server keeps one watch per resource for its watch cache; here a
// watch costs the one goroutine that turns the backend's batches into
// responses. What the client sees is the same: responses in revision
// order, Created only when asked for, a final Canceled response naming a
// compaction or another error, the channel closed when the watch's
// context is done or the watcher is closed.
type watcher struct {
	s *Server

	mu      sync.Mutex
	closed  bool
	done    chan struct{}
	watches map[storage.Watcher]struct{}
}

func (s *Server) newWatcher() *watcher {
	return &watcher{s: s, done: make(chan struct{}), watches: map[storage.Watcher]struct{}{}}
}

// Watch implements clientv3.Watcher.
func (w *watcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	op := clientv3.OpWatch(key, opts...)
	ch := make(chan clientv3.WatchResponse)
	start := op.Rev()
	cur := w.s.be.CurrentRevision()
	if start <= 0 {
		start = cur + 1
	}
	// The backend watch ends with ctx; Close and the pump end it earlier.
	bw, err := w.s.be.Watch(ctx, op.KeyBytes(), op.RangeBytes(), start, op.IsPrevKV())
	var first []clientv3.WatchResponse
	if op.IsCreatedNotify() {
		first = append(first, clientv3.WatchResponse{Header: w.s.header(cur), Created: true})
	}
	if err != nil {
		first = append(first, w.s.canceled(err))
		go func() {
			defer close(ch)
			for _, r := range first {
				select {
				case ch <- r:
				case <-ctx.Done():
					return
				case <-w.done:
					return
				}
			}
		}()
		return ch
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		bw.Close()
		close(ch)
		return ch
	}
	w.watches[bw] = struct{}{}
	w.mu.Unlock()
	go w.pump(ctx, bw, op, first, ch)
	return ch
}

// canceled is the final response of a watch that ended with err.
func (s *Server) canceled(err error) clientv3.WatchResponse {
	resp := clientv3.WatchResponse{Header: s.header(0), Canceled: true}
	resp.CompactRevision, resp.CancelReason = s.cancelCause(err)
	return resp
}

func (w *watcher) pump(ctx context.Context, bw storage.Watcher, op clientv3.Op, pending []clientv3.WatchResponse, ch chan<- clientv3.WatchResponse) {
	defer func() {
		w.mu.Lock()
		delete(w.watches, bw)
		w.mu.Unlock()
		bw.Close()
		close(ch)
	}()
	// Progress ticks only for watches that asked for notifications.
	var tick <-chan time.Time
	if op.IsProgressNotify() {
		t := time.NewTicker(w.s.ProgressInterval)
		defer t.Stop()
		tick = t.C
	}
	noPut, noDelete := op.IsFilterPut(), op.IsFilterDelete()
	idle := false // nothing delivered since the last progress tick
	events := bw.Events()
	for {
		// Deliver what is pending before taking more from the backend, so
		// a slow reader holds back its watch and nothing else.
		var out chan<- clientv3.WatchResponse
		var next clientv3.WatchResponse
		in := events
		if len(pending) > 0 {
			out, next, in = ch, pending[0], nil
		}
		select {
		case out <- next:
			pending = pending[1:]
		case batch, ok := <-in:
			if !ok {
				if err := bw.Err(); err != nil && ctx.Err() == nil {
					select {
					case ch <- w.s.canceled(err):
					case <-ctx.Done():
					case <-w.done:
					}
				}
				return
			}
			if len(batch.Events) == 0 {
				pending = append(pending, clientv3.WatchResponse{Header: w.s.header(batch.Revision)})
				continue
			}
			var evs []*clientv3.Event
			for _, ev := range batch.Events {
				if e := toEvent(ev, noPut, noDelete); e != nil {
					evs = append(evs, (*clientv3.Event)(e))
				}
			}
			idle = false
			if len(evs) > 0 {
				pending = append(pending, clientv3.WatchResponse{Header: w.s.header(batch.Revision), Events: evs})
			}
		case <-tick:
			if idle {
				bw.RequestProgress()
			}
			idle = true
		case <-ctx.Done():
			return
		case <-w.done:
			return
		}
	}
}

// RequestProgress implements clientv3.Watcher: as for a gRPC stream, every
// watch of the watcher gets a progress notification once it has delivered
// everything committed so far. (clientv3 asks on the stream of ctx's
// metadata; an in-process client has one stream.)
func (w *watcher) RequestProgress(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.New("etcdapi: watcher closed")
	}
	for bw := range w.watches {
		bw.RequestProgress()
	}
	return nil
}

// Close implements clientv3.Watcher: every watch ends and its channel
// closes.
func (w *watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
	return nil
}
