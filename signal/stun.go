package signal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/pion/stun"
)

// ChangePort is the CHANGE-REQUEST flag (RFC 5780) asking a STUN server to
// answer from its other port.
const ChangePort = 0x02

// ServeSTUN answers STUN binding requests on conn until ctx is done. A
// request whose CHANGE-REQUEST asks for another port is answered from
// other instead, so a client can tell whether its NAT lets in packets from
// where it never sent (kin doctor). kin signal runs it next to TURN.
func ServeSTUN(ctx context.Context, conn, other net.PacketConn) error {
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("STUN: %w", err)
		}
		resp, changePort, err := STUNReply(buf[:n], from)
		if err != nil {
			continue // not for us; STUN servers stay silent
		}
		out := conn
		if changePort && other != nil {
			out = other
		}
		out.WriteTo(resp, from)
	}
}

// STUNReply answers one datagram: a binding request gets a success
// response carrying from as XOR-MAPPED-ADDRESS. changePort says the client
// asked for the answer to come from the other port.
func STUNReply(req []byte, from net.Addr) (resp []byte, changePort bool, err error) {
	var m stun.Message
	if err := stun.Decode(req, &m); err != nil {
		return nil, false, fmt.Errorf("not STUN: %w", err)
	}
	if m.Type != stun.BindingRequest {
		return nil, false, errors.New("not a binding request")
	}
	if v, err := m.Get(stun.AttrChangeRequest); err == nil && len(v) == 4 {
		changePort = binary.BigEndian.Uint32(v)&ChangePort != 0
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		return nil, false, errors.New("not a UDP address")
	}
	r, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
	if err != nil {
		return nil, false, fmt.Errorf("build STUN response: %w", err)
	}
	return r.Raw, changePort, nil
}
