package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// TicketPrefix starts every ticket; the digit is the format version.
const TicketPrefix = "kin1"

// SecretSize is the length of a ticket secret in bytes.
const SecretSize = 16

// TicketKind says what a ticket grants.
type TicketKind byte

const (
	// TicketPort grants port Ticket.Port on the sharer's machine: TCP,
	// or UDP when Ticket.UDP is set.
	TicketPort TicketKind = 1
	// TicketFiles lets the holder exchange files with the issuer.
	TicketFiles TicketKind = 2
	// TicketInvite pairs the holder with the issuer once: both record
	// each other as friends (kin invite / kin join).
	TicketInvite TicketKind = 3
)

// ticketUDPPort is how a TicketPort with UDP set is written: a kind byte
// of its own, so that tickets for TCP ports stay exactly as they were (and
// an older kin refuses a UDP ticket rather than taking it for TCP).
const ticketUDPPort byte = 4

// MaxInviteLifetime bounds how long an invite may stay valid.
const MaxInviteLifetime = 30 * 24 * time.Hour

// Ticket is a one-line capability: who to reach (Peer), how (Signal) and a
// secret the holder proves inside SSH to be let in for exactly one thing.
type Ticket struct {
	Kind   TicketKind
	Port   int           // for TicketPort
	UDP    bool          // for TicketPort: the port is a UDP port
	Peer   ssh.PublicKey // the issuer's identity = its SSH host key
	Signal string        // signaling server URL (ws:// or wss://)
	Name   string        // issuer's display name; a hint, not authenticated
	Secret []byte        // SecretSize random bytes

	// For TicketInvite only: when the invite stops working (whole
	// seconds), and the name the issuer will record the holder under.
	// Name is then the name the issuer suggests the holder uses for it.
	Expires time.Time
	Invitee string
	// Instance names the issuer's registration with the signaling server
	// that serves this ticket, so the holder's offer reaches that process
	// even when the issuer runs several (e.g. two kin shares). Optional:
	// tickets without one reach the issuer's newest listening process.
	Instance string
}

// MaxInstance is the longest instance name a ticket carries.
const MaxInstance = 32

// NewSecret returns a fresh random ticket secret.
func NewSecret() []byte {
	b := make([]byte, SecretSize)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // only on a broken OS
	}
	return b
}

// SecretEqual compares two secrets in constant time.
func SecretEqual(a, b []byte) bool {
	return len(a) == SecretSize && subtle.ConstantTimeCompare(a, b) == 1
}

var ticketEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

const checksumSize = 4

// String encodes the ticket as "kin1" followed by lowercase base32 of the
// fields and a 4-byte SHA-256 checksum, so a mistyped ticket is detected.
func (t Ticket) String() string {
	payload, err := t.marshal()
	if err != nil {
		return "<invalid ticket: " + err.Error() + ">"
	}
	return TicketPrefix + ticketEncoding.EncodeToString(payload)
}

func (t Ticket) validate() error {
	switch t.Kind {
	case TicketPort:
		if t.Port < 1 || t.Port > 65535 {
			return fmt.Errorf("port %d out of range", t.Port)
		}
	case TicketFiles:
		if t.Port != 0 || t.UDP {
			return errors.New("files ticket with a port")
		}
	case TicketInvite:
		if t.Port != 0 || t.UDP {
			return errors.New("invite with a port")
		}
		if t.Expires.Unix() <= 0 || t.Expires.Nanosecond() != 0 {
			return errors.New("invite without a valid expiry")
		}
		if err := ValidName(t.Invitee); err != nil {
			return fmt.Errorf("invitee: %w", err)
		}
	default:
		return fmt.Errorf("unknown ticket kind %d", t.Kind)
	}
	if t.Peer == nil {
		return errors.New("no peer key")
	}
	if len(t.Secret) != SecretSize {
		return errors.New("bad secret size")
	}
	if t.Kind != TicketInvite && (!t.Expires.IsZero() || t.Invitee != "") {
		return errors.New("expiry or invitee on a ticket that is not an invite")
	}
	if len(t.Signal) > 255 || len(t.Name) > 64 {
		return errors.New("signal URL or name too long")
	}
	u, err := url.Parse(t.Signal)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("signal URL %q is not ws:// or wss://", t.Signal)
	}
	if strings.ContainsAny(t.Name, "\x00\n\r\t") {
		return errors.New("control characters in name")
	}
	if len(t.Instance) > MaxInstance || strings.Trim(t.Instance, "0123456789abcdefghijklmnopqrstuvwxyz-") != "" {
		return errors.New("instance is not a short lowercase name")
	}
	return nil
}

func (t Ticket) marshal() ([]byte, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if t.UDP {
		b.WriteByte(ticketUDPPort)
	} else {
		b.WriteByte(byte(t.Kind))
	}
	binary.Write(&b, binary.BigEndian, uint16(t.Port))
	key := t.Peer.Marshal()
	if len(key) > 255 {
		return nil, errors.New("peer key too long for a ticket (use an ed25519 key)")
	}
	b.WriteByte(byte(len(key)))
	b.Write(key)
	b.Write(t.Secret)
	b.WriteByte(byte(len(t.Signal)))
	b.WriteString(t.Signal)
	b.WriteByte(byte(len(t.Name)))
	b.WriteString(t.Name)
	if t.Kind == TicketInvite {
		binary.Write(&b, binary.BigEndian, uint64(t.Expires.Unix()))
		b.WriteByte(byte(len(t.Invitee)))
		b.WriteString(t.Invitee)
	}
	if t.Instance != "" { // optional, so tickets without one keep their form
		b.WriteByte(byte(len(t.Instance)))
		b.WriteString(t.Instance)
	}
	sum := sha256.Sum256(append([]byte(TicketPrefix), b.Bytes()...))
	b.Write(sum[:checksumSize])
	return b.Bytes(), nil
}

// ErrNotTicket is returned by ParseTicket for text that does not start
// with the ticket prefix.
var ErrNotTicket = errors.New("not a kin ticket (tickets start with " + TicketPrefix + ")")

// LooksLikeTicket reports whether s is meant to be a ticket.
func LooksLikeTicket(s string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), TicketPrefix)
}

// ParseTicket decodes a ticket, accepting surrounding whitespace, a leading
// "kin connect " as printed by kin share (or "kin receive ", "kin join "),
// and upper case.
func ParseTicket(s string) (Ticket, error) {
	s = strings.TrimSpace(s)
	for _, p := range []string{"kin connect ", "kin receive ", "kin join "} {
		s = strings.TrimPrefix(s, p)
	}
	s = strings.ToLower(strings.TrimSpace(s))
	if !strings.HasPrefix(s, TicketPrefix) {
		if strings.HasPrefix(s, "kin") && len(s) > 3 && s[3] >= '0' && s[3] <= '9' {
			return Ticket{}, fmt.Errorf("ticket version %q is not supported by this kin; update kin", s[:4])
		}
		return Ticket{}, ErrNotTicket
	}
	payload, err := ticketEncoding.DecodeString(s[len(TicketPrefix):])
	if err != nil {
		return Ticket{}, errors.New("ticket is damaged (it contains characters a ticket never has); copy it again in full")
	}
	if len(payload) < checksumSize+4 {
		return Ticket{}, errors.New("ticket is too short; copy it again in full")
	}
	body, sum := payload[:len(payload)-checksumSize], payload[len(payload)-checksumSize:]
	want := sha256.Sum256(append([]byte(TicketPrefix), body...))
	if subtle.ConstantTimeCompare(sum, want[:checksumSize]) != 1 {
		return Ticket{}, errors.New("ticket checksum does not match: it was mistyped or cut short; copy it again in full")
	}
	t, err := unmarshalTicket(body)
	if err != nil {
		return Ticket{}, fmt.Errorf("ticket is malformed: %w", err)
	}
	return t, nil
}

func unmarshalTicket(body []byte) (Ticket, error) {
	r := bytes.NewReader(body)
	var t Ticket
	kind, err := r.ReadByte()
	if err != nil {
		return t, err
	}
	t.Kind = TicketKind(kind)
	if kind == ticketUDPPort {
		t.Kind, t.UDP = TicketPort, true
	}
	var port uint16
	if err := binary.Read(r, binary.BigEndian, &port); err != nil {
		return t, err
	}
	t.Port = int(port)
	key, err := readShort(r)
	if err != nil {
		return t, err
	}
	if t.Peer, err = ssh.ParsePublicKey(key); err != nil {
		return t, fmt.Errorf("peer key: %w", err)
	}
	t.Secret = make([]byte, SecretSize)
	if _, err := io.ReadFull(r, t.Secret); err != nil {
		return t, errors.New("truncated")
	}
	sig, err := readShort(r)
	if err != nil {
		return t, err
	}
	t.Signal = string(sig)
	name, err := readShort(r)
	if err != nil {
		return t, err
	}
	t.Name = string(name)
	if t.Kind == TicketInvite {
		var exp uint64
		if err := binary.Read(r, binary.BigEndian, &exp); err != nil {
			return t, errors.New("truncated")
		}
		if exp == 0 || exp > 1<<40 {
			return t, errors.New("invite expiry out of range")
		}
		t.Expires = time.Unix(int64(exp), 0)
		invitee, err := readShort(r)
		if err != nil {
			return t, err
		}
		t.Invitee = string(invitee)
	}
	if r.Len() != 0 {
		inst, err := readShort(r)
		if err != nil {
			return t, err
		}
		if len(inst) == 0 {
			return t, errors.New("empty instance")
		}
		t.Instance = string(inst)
	}
	if r.Len() != 0 {
		return t, errors.New("trailing bytes")
	}
	return t, t.validate()
}

func readShort(r *bytes.Reader) ([]byte, error) {
	n, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if int(n) > r.Len() {
		return nil, errors.New("truncated")
	}
	b := make([]byte, n)
	r.Read(b)
	return b, nil
}
