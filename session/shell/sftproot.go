package shell

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/pkg/sftp"
)

// rootFS serves sftp inside one directory and nowhere else: "/" is the
// directory, and every path, "..", and symbolic link is resolved by
// os.Root, which refuses whatever would leave it. It is what a friend who
// may only send files (not run commands) gets: a folder of their own for
// backups (restic's sftp backend, sftp, scp). No symbolic or hard links
// can be made, no owners changed, no set-id bits set.
type rootFS struct{ root *os.Root }

// sftpHandlers opens dir (creating it) as an sftp root.
func sftpHandlers(dir string) (sftp.Handlers, io.Closer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return sftp.Handlers{}, nil, fmt.Errorf("make sftp folder: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return sftp.Handlers{}, nil, fmt.Errorf("open sftp folder: %w", err)
	}
	fsys := &rootFS{r}
	return sftp.Handlers{FileGet: fsys, FilePut: fsys, FileCmd: fsys, FileList: fsys}, r, nil
}

// rel turns an sftp path (absolute after pkg/sftp cleans it against "/")
// into a path relative to the root: "/" and "" are ".".
func rel(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return filepath.FromSlash(p[1:])
}

// errUnsupported is what the client hears for what this folder never does.
var errUnsupported = sftp.ErrSSHFxOpUnsupported

func (f *rootFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return f.root.OpenFile(rel(r.Filepath), os.O_RDONLY, 0)
}

func (f *rootFS) Filewrite(r *sftp.Request) (io.WriterAt, error) { return f.OpenFile(r) }

func (f *rootFS) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	pf := r.Pflags()
	flags := os.O_WRONLY
	if pf.Read {
		flags = os.O_RDWR
	}
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	// Append is not O_APPEND: pkg/sftp writes at offsets (WriteAt).
	mode := fs.FileMode(0o644)
	if r.AttrFlags().Permissions {
		mode = fs.FileMode(r.Attributes().Mode) & 0o777
	}
	return f.root.OpenFile(rel(r.Filepath), flags, mode)
}

func (f *rootFS) Filecmd(r *sftp.Request) error {
	p := rel(r.Filepath)
	switch r.Method {
	case "Setstat":
		return f.setstat(p, r)
	case "Mkdir":
		mode := fs.FileMode(0o755)
		if r.AttrFlags().Permissions {
			mode = fs.FileMode(r.Attributes().Mode) & 0o777
		}
		return f.root.Mkdir(p, mode)
	case "Rename":
		// SFTP's rename does not replace (OpenSSH's sftp-server neither).
		if _, err := f.root.Lstat(rel(r.Target)); err == nil {
			return os.ErrExist
		}
		return f.rename(p, rel(r.Target))
	case "Remove", "Rmdir":
		if p == "." {
			return os.ErrPermission
		}
		fi, err := f.root.Lstat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() != (r.Method == "Rmdir") {
			if fi.IsDir() {
				return errors.New("is a directory")
			}
			return errors.New("not a directory")
		}
		return f.root.Remove(p)
	}
	return errUnsupported // Link, Symlink
}

// PosixRename replaces the target, as restic expects.
func (f *rootFS) PosixRename(r *sftp.Request) error {
	return f.rename(rel(r.Filepath), rel(r.Target))
}

func (f *rootFS) rename(from, to string) error {
	if from == "." || to == "." {
		return os.ErrPermission
	}
	return f.root.Rename(from, to)
}

func (f *rootFS) setstat(p string, r *sftp.Request) error {
	fl, a := r.AttrFlags(), r.Attributes()
	if fl.UidGid {
		return errUnsupported
	}
	if fl.Size {
		file, err := f.root.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = file.Truncate(int64(a.Size))
		if cerr := file.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if fl.Permissions {
		if err := f.root.Chmod(p, fs.FileMode(a.Mode)&0o777); err != nil {
			return err
		}
	}
	if fl.Acmodtime {
		if err := f.root.Chtimes(p, a.AccessTime(), a.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

func (f *rootFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := rel(r.Filepath)
	switch r.Method {
	case "List":
		d, err := f.root.Open(p)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		list, err := d.Readdir(-1)
		if err != nil {
			return nil, err
		}
		return lister(list), nil
	case "Stat":
		fi, err := f.root.Stat(p)
		if err != nil {
			return nil, err
		}
		return lister{fi}, nil
	}
	return nil, errUnsupported // Readlink
}

func (f *rootFS) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	fi, err := f.root.Lstat(rel(r.Filepath))
	if err != nil {
		return nil, err
	}
	return lister{fi}, nil
}

type lister []os.FileInfo

func (l lister) ListAt(to []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(to, l[off:])
	if n < len(to) {
		return n, io.EOF
	}
	return n, nil
}
