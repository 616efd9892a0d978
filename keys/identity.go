// Package keys holds kin's notion of who is who: a peer's ed25519 identity,
// the short peer ID people read out to each other, the friends file that says
// what each friend may do, and tickets that let a non-friend in for one thing.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// PeerID is the short, readable name of a public key: the first 16 characters
// of the lowercase base32 SHA-256 fingerprint of the key's wire form. It is
// what the signaling server routes by.
type PeerID string

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// IDOf returns the peer ID of a public key.
func IDOf(pub ssh.PublicKey) PeerID {
	sum := sha256.Sum256(pub.Marshal())
	return PeerID(strings.ToLower(idEncoding.EncodeToString(sum[:]))[:16])
}

// Valid reports whether id has the form of a peer ID (it does not say whether
// any key has it).
func (id PeerID) Valid() bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Identity is a peer's own key pair.
type Identity struct {
	Signer ssh.Signer
	// Path is the file the key was read from, empty for an in-memory key.
	Path string
}

// Public returns the identity's public key.
func (id *Identity) Public() ssh.PublicKey { return id.Signer.PublicKey() }

// ID returns the identity's peer ID.
func (id *Identity) ID() PeerID { return IDOf(id.Public()) }

// AuthorizedKey returns the public key as one authorized_keys line without a
// trailing newline, e.g. "ssh-ed25519 AAAA...".
func (id *Identity) AuthorizedKey() string { return FormatKey(id.Public()) }

// FormatKey returns pub as "type base64" without a trailing newline.
func FormatKey(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// NewIdentity makes a fresh in-memory ed25519 identity.
func NewIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("wrap ed25519 key: %w", err)
	}
	return &Identity{Signer: s}, nil
}

// LoadIdentity reads an existing OpenSSH private key (unencrypted). Any key
// type x/crypto/ssh supports works, though kin makes ed25519 keys.
func LoadIdentity(path string) (*Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("identity %s is encrypted with a passphrase; kin needs an unencrypted key (make one with `ssh-keygen -t ed25519 -N '' -f FILE`): %w", path, err)
		}
		return nil, fmt.Errorf("parse identity %s: %w", path, err)
	}
	return &Identity{Signer: s, Path: path}, nil
}

// LoadOrCreateIdentity reads the identity at path, or makes a new ed25519
// key there (mode 0600, OpenSSH format, so `ssh-keygen -y -f` reads it) if
// no file exists. created tells which happened.
func LoadOrCreateIdentity(path string) (id *Identity, created bool, err error) {
	id, err = LoadIdentity(path)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate ed25519 key: %w", err)
	}
	comment := "kin"
	if h, herr := os.Hostname(); herr == nil {
		comment = "kin@" + h
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, false, fmt.Errorf("encode identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create identity dir: %w", err)
	}
	if err := WriteFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, false, fmt.Errorf("write identity: %w", err)
	}
	id, err = LoadIdentity(path)
	return id, true, err
}

// WriteFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so readers see the old or the new file, never half.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LooksLikePrivateKey reports whether s holds (part of) a private key as
// people paste them: a PEM block such as "-----BEGIN OPENSSH PRIVATE
// KEY-----", the base64 body of an OpenSSH private key (it starts with
// "openssh-key-v1"), or a PuTTY key file. Callers refuse such text without
// echoing it.
func LooksLikePrivateKey(s string) bool {
	return strings.Contains(s, "PRIVATE KEY-----") ||
		strings.Contains(s, "-----BEGIN OPENSSH") ||
		strings.Contains(s, "b3BlbnNzaC1rZXktdjE") || // base64("openssh-key-v1")
		strings.Contains(s, "PuTTY-User-Key-File-")
}
