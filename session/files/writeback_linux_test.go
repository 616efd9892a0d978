package files

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A big file goes to the disk as it arrives and leaves the page cache
// behind it: after a 64 MiB transfer the cache holds a window or two of
// it, not the whole file, which would push out what the user's programs
// had cached (and cost every page of it twice on a VM whose host takes
// freed memory back).
func TestReceivedFileLeavesThePageCache(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(inbox, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the inbox is on tmpfs, where the page cache is the file")
	}
	want := writeRandom(t, filepath.Join(src, "big.bin"), 64<<20)
	_, _, serr, rerr := transfer(t, mustScan(t, filepath.Join(src, "big.bin")), inbox, nil)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	got := filepath.Join(inbox, "big.bin")
	// Before the SHA-256 below reads it all back in.
	if n := cachedBytes(t, got); n > 2*writebackBytes {
		t.Errorf("%d MiB of the 64 MiB file stayed in the page cache; want at most %d", n>>20, 2*writebackBytes>>20)
	}
	if sum(t, got) != sha256.Sum256(want) {
		t.Error("SHA-256 differs")
	}
}

// cachedBytes is how much of the file at path is in the page cache.
func cachedBytes(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	var n int64
	for _, v := range vec {
		if v&1 != 0 {
			n += int64(page)
		}
	}
	return n
}
