package etcdapi

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiff-sh/skiff/server/storage"
)

// watchStream multiplexes the watches of one Watch RPC, as etcd does.
//
// Responses to the client's requests (created, canceled) never wait for
// room: the goroutine reading requests must always make progress, because
// the client may be blocked sending its next request while the responses
// it has not read yet fill the event queue — over the in-process client
// (etcd's channel pipes, next to no buffering) and with every resource's
// watches on one stream, waiting there deadlocked the whole stream. Events
// keep a bounded queue: a slow reader holds back its watches' pumps.
type watchStream struct {
	s      *Server
	stream pb.Watch_WatchServer
	ctx    context.Context
	send   chan *pb.WatchResponse // events and progress, bounded

	ctrlMu    sync.Mutex
	ctrl      []*pb.WatchResponse // replies to requests, unbounded
	ctrlReady chan struct{}

	mu      sync.Mutex
	nextID  int64
	watches map[int64]*streamWatch
}

type streamWatch struct {
	id       int64
	cancel   context.CancelFunc
	progress bool
	noPut    bool
	noDelete bool

	mu   sync.Mutex
	bw   storage.Watcher
	idle bool // nothing sent since the last progress tick
}

func (w *streamWatch) requestProgress() {
	w.mu.Lock()
	bw := w.bw
	w.mu.Unlock()
	if bw != nil {
		bw.RequestProgress()
	}
}

// Watch implements pb.WatchServer.
func (s *Server) Watch(stream pb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ws := &watchStream{s: s, stream: stream, ctx: ctx, send: make(chan *pb.WatchResponse, 64),
		ctrlReady: make(chan struct{}, 1), watches: map[int64]*streamWatch{}}
	sendErr := make(chan error, 1)
	go func() { sendErr <- ws.sendLoop() }()
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			ws.handle(req)
		}
	}()
	var err error
	select {
	case err = <-sendErr:
	case <-recvErr:
	case <-ctx.Done():
	}
	cancel()
	ws.mu.Lock()
	for _, w := range ws.watches {
		w.cancel()
	}
	ws.mu.Unlock()
	return err
}

// sendLoop sends responses and, every ProgressInterval, asks idle watches
// that want progress notifications for one (in this goroutine rather than
// one more per stream: there is a stream per resource, and asking never
// blocks).
func (ws *watchStream) sendLoop() error {
	t := time.NewTicker(ws.s.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ws.progressTick()
		case resp := <-ws.send:
			// Replies queued before this event go first: a watch's
			// Created precedes its events.
			if err := ws.flushReplies(); err != nil {
				return err
			}
			if err := ws.stream.Send(resp); err != nil {
				return err
			}
		case <-ws.ctrlReady:
			if err := ws.flushReplies(); err != nil {
				return err
			}
		case <-ws.ctx.Done():
			return nil
		}
	}
}

func (ws *watchStream) flushReplies() error {
	ws.ctrlMu.Lock()
	replies := ws.ctrl
	ws.ctrl = nil
	ws.ctrlMu.Unlock()
	for _, r := range replies {
		if err := ws.stream.Send(r); err != nil {
			return err
		}
	}
	return nil
}

// reply queues a response to a request without blocking.
func (ws *watchStream) reply(resp *pb.WatchResponse) {
	ws.ctrlMu.Lock()
	ws.ctrl = append(ws.ctrl, resp)
	ws.ctrlMu.Unlock()
	select {
	case ws.ctrlReady <- struct{}{}:
	default:
	}
}

// enqueue queues an event response, waiting for room.
func (ws *watchStream) enqueue(resp *pb.WatchResponse) bool {
	select {
	case ws.send <- resp:
		return true
	case <-ws.ctx.Done():
		return false
	}
}

func (ws *watchStream) handle(req *pb.WatchRequest) {
	switch r := req.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		ws.create(r.CreateRequest)
	case *pb.WatchRequest_CancelRequest:
		ws.mu.Lock()
		w := ws.watches[r.CancelRequest.WatchId]
		delete(ws.watches, r.CancelRequest.WatchId)
		ws.mu.Unlock()
		if w != nil {
			w.cancel()
			ws.reply(&pb.WatchResponse{Header: ws.s.header(0), WatchId: w.id, Canceled: true})
		}
	case *pb.WatchRequest_ProgressRequest:
		// Each watch answers in order with its own events, once it has
		// delivered everything committed so far.
		ws.mu.Lock()
		for _, w := range ws.watches {
			w.requestProgress()
		}
		ws.mu.Unlock()
	}
}

func (ws *watchStream) create(cr *pb.WatchCreateRequest) {
	ws.mu.Lock()
	id := cr.WatchId
	if id == clientv3.AutoWatchID {
		for ws.watches[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	}
	if _, dup := ws.watches[id]; dup {
		ws.mu.Unlock()
		ws.reply(&pb.WatchResponse{Header: ws.s.header(0), WatchId: id, Created: true, Canceled: true, CancelReason: "etcdserver: duplicate watch id"})
		return
	}
	ctx, cancel := context.WithCancel(ws.ctx)
	w := &streamWatch{id: id, cancel: cancel, progress: cr.ProgressNotify}
	for _, f := range cr.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	ws.watches[id] = w
	ws.mu.Unlock()

	start := cr.StartRevision
	cur := ws.s.be.CurrentRevision()
	if start <= 0 {
		start = cur + 1
	}
	bw, err := ws.s.be.Watch(ctx, cr.Key, cr.RangeEnd, start, cr.PrevKv)
	ws.reply(&pb.WatchResponse{Header: ws.s.header(cur), WatchId: id, Created: true})
	if err != nil {
		ws.reply(ws.closeWatch(w, err))
		return
	}
	w.mu.Lock()
	w.bw = bw
	w.mu.Unlock()
	go ws.pump(ctx, w, bw)
}

// closeWatch ends a watch and returns its terminal response.
func (ws *watchStream) closeWatch(w *streamWatch, err error) *pb.WatchResponse {
	ws.mu.Lock()
	delete(ws.watches, w.id)
	ws.mu.Unlock()
	w.cancel()
	resp := &pb.WatchResponse{Header: ws.s.header(0), WatchId: w.id, Canceled: true}
	resp.CompactRevision, resp.CancelReason = ws.s.cancelCause(err)
	return resp
}

// cancelCause is what a watch's final response says of err: the compact
// revision for a compaction, else the error.
func (s *Server) cancelCause(err error) (compactRev int64, reason string) {
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, storage.ErrCompacted):
		return s.be.CompactRevision(), ""
	}
	return 0, err.Error()
}

func (ws *watchStream) pump(ctx context.Context, w *streamWatch, bw storage.Watcher) {
	defer bw.Close()
	for {
		select {
		case batch, ok := <-bw.Events():
			if !ok {
				if err := bw.Err(); err != nil && ctx.Err() == nil {
					// After the events already queued (a compaction
					// cancel follows what was delivered).
					ws.enqueue(ws.closeWatch(w, err))
				}
				return
			}
			if len(batch.Events) == 0 {
				if !ws.enqueue(&pb.WatchResponse{Header: ws.s.header(batch.Revision), WatchId: w.id}) {
					return
				}
				continue
			}
			events := make([]*mvccpb.Event, 0, len(batch.Events))
			for _, ev := range batch.Events {
				if e := toEvent(ev, w.noPut, w.noDelete); e != nil {
					events = append(events, e)
				}
			}
			w.mu.Lock()
			w.idle = false
			w.mu.Unlock()
			if len(events) == 0 {
				continue
			}
			if !ws.enqueue(&pb.WatchResponse{Header: ws.s.header(batch.Revision), WatchId: w.id, Events: events}) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// progressTick asks for a progress notification on every watch that
// wants them and sent nothing since the previous tick. requestProgress
// never blocks: the notification comes through the watch's pump.
func (ws *watchStream) progressTick() {
	ws.mu.Lock()
	var due []*streamWatch
	for _, w := range ws.watches {
		if w.progress {
			due = append(due, w)
		}
	}
	ws.mu.Unlock()
	for _, w := range due {
		w.mu.Lock()
		send := w.idle
		w.idle = true
		w.mu.Unlock()
		if send {
			w.requestProgress()
		}
	}
}

// toEvent is ev as etcd sends it, or nil where the watch's filters drop it.
func toEvent(ev storage.Event, noPut, noDelete bool) *mvccpb.Event {
	if (ev.Type == storage.EventPut && noPut) || (ev.Type == storage.EventDelete && noDelete) {
		return nil
	}
	e := &mvccpb.Event{Kv: toKV(ev.KV)}
	if ev.Type == storage.EventDelete {
		e.Type = mvccpb.DELETE
	}
	if ev.PrevKV != nil {
		e.PrevKv = toKV(*ev.PrevKV)
	}
	return e
}
