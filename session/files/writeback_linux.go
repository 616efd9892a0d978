package files

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeBehind streams a file to the disk as it is written without filling
// the page cache: it starts writing f's bytes [off, end) out, waits until
// the window before them, [prev, off), is on the disk, and drops that
// window from the cache. A big transfer then keeps two windows of cache,
// not the whole file (which would push out what the user's programs had
// there), and the fsync before the rename has little left to write.
// Errors are left to that fsync, which reports them.
func writeBehind(f *os.File, prev, off, end int64) {
	fd := int(f.Fd())
	unix.SyncFileRange(fd, off, end-off, unix.SYNC_FILE_RANGE_WRITE)
	if off > prev {
		unix.SyncFileRange(fd, prev, off-prev, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		unix.Fadvise(fd, prev, off-prev, unix.FADV_DONTNEED)
	}
}
