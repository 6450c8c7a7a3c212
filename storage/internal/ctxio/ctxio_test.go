package ctxio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// shortWriter accepts at most max bytes per write, without an error.
type shortWriter struct {
	buf bytes.Buffer
	max int
}

func (w *shortWriter) Write(p []byte) (int, error) {
	return w.buf.Write(p[:min(len(p), w.max)])
}

func TestWriter(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var buf bytes.Buffer
	w := NewWriter(ctx, &buf)
	if n, err := w.Write([]byte("abc")); n != 3 || err != nil || w.Written() != 3 || w.Err() != nil {
		t.Fatalf("Write = %d, %v; Written %d, Err %v", n, err, w.Written(), w.Err())
	}
	cancel()
	if n, err := w.Write([]byte("def")); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Write after cancel = %d, %v; want 0, context.Canceled", n, err)
	}
	if !errors.Is(w.Err(), context.Canceled) || w.Written() != 3 || buf.String() != "abc" {
		t.Errorf("after cancel: Err %v, Written %d, wrote %q", w.Err(), w.Written(), buf.String())
	}

	sw := &shortWriter{max: 2}
	w = NewWriter(t.Context(), sw)
	if n, err := w.Write([]byte("abc")); n != 2 || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("short Write = %d, %v; want 2, io.ErrShortWrite", n, err)
	}
	if n, err := w.Write([]byte("x")); n != 0 || !errors.Is(err, io.ErrShortWrite) || w.Written() != 2 {
		t.Errorf("Write after a failure = %d, %v (Written %d); want the first error again", n, err, w.Written())
	}
}
