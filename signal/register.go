package signal

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// registerDomain separates registration signatures from every other use of
// a peer's key.
const registerDomain = "kin-signal-register-v1\x00"

// registerData is what a client signs to register: the domain and the
// server's nonce, so a signature is good for one server challenge only.
func registerData(nonce []byte) []byte {
	return append([]byte(registerDomain), nonce...)
}

func newNonce() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// signRegistration answers a challenge.
func signRegistration(signer ssh.Signer, nonce []byte) (Message, error) {
	sig, err := signer.Sign(rand.Reader, registerData(nonce))
	if err != nil {
		return Message{}, fmt.Errorf("sign registration: %w", err)
	}
	return Message{V: Version, Type: TypeRegister, Key: keys.FormatKey(signer.PublicKey()), Sig: ssh.Marshal(sig)}, nil
}

// verifyRegistration checks a register message against the nonce and
// returns the key's peer ID.
func verifyRegistration(m Message, nonce []byte) (keys.PeerID, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.Key))
	if err != nil {
		return "", fmt.Errorf("registration key: %w", err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(m.Sig, &sig); err != nil {
		return "", fmt.Errorf("registration signature: %w", err)
	}
	if err := pub.Verify(registerData(nonce), &sig); err != nil {
		return "", errors.New("registration signature does not match the key")
	}
	return keys.IDOf(pub), nil
}
