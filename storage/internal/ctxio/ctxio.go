// Package ctxio holds the writer the storage backends' Backup copies through, so that a
// cancelled backup stops at its next write and reports the error its destination (or its
// context) gave, with the chain intact for errors.Is.
package ctxio

import (
	"context"
	"io"
)

// Writer passes writes to an io.Writer until a context is done, and keeps the count of bytes
// the io.Writer accepted and the first error. It is not safe for concurrent use.
type Writer struct {
	ctx context.Context
	w   io.Writer
	n   int64
	err error
}

// NewWriter returns a Writer to w that stops once ctx is done.
func NewWriter(ctx context.Context, w io.Writer) *Writer {
	return &Writer{ctx: ctx, w: w}
}

// Write checks the context, then writes p to the underlying writer. After the first error, of
// the context or of the writer (a short write counts as io.ErrShortWrite), every Write fails
// with it and writes nothing.
func (c *Writer) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.err = c.ctx.Err(); c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	c.err = err
	return n, err
}

// Written is the number of bytes the underlying writer accepted, also when a write failed part
// way.
func (c *Writer) Written() int64 { return c.n }

// Err is the first error of the context or of the underlying writer, nil while there is none.
// Backup reports it in place of the error its copier returns, which may have lost the chain.
func (c *Writer) Err() error { return c.err }
