package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"kin/keys"
)

// Bus joins signaling server instances into one routing space: a message
// for a peer registered on another instance goes through it.
type Bus interface {
	// Join asks for id's messages to be delivered to this instance.
	Join(ctx context.Context, id keys.PeerID) error
	// Leave stops that.
	Leave(ctx context.Context, id keys.PeerID) error
	// Publish hands m to the instance where m.To is registered, and says
	// whether there was one.
	Publish(ctx context.Context, m Message) (bool, error)
	// Online says whether id is registered on any instance.
	Online(ctx context.Context, id keys.PeerID) (bool, error)
}

// RedisBus is a Bus over Redis pub/sub: each instance subscribes to one
// channel per peer registered on it. A peer's presence is exactly its
// channel's subscription, so it ends the moment its instance's Redis
// connection does (an instance that dies, or a machine that vanishes, once
// Redis's tcp-keepalive notices): no separate presence keys to expire.
type RedisBus struct {
	rdb *redis.Client
	ps  *redis.PubSub
	log *slog.Logger
}

const busPrefix = "kin:peer:"

// NewRedisBus connects to the Redis server at url (redis://host:port/db).
func NewRedisBus(ctx context.Context, url string, log *slog.Logger) (*RedisBus, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %w", url, err)
	}
	rdb := redis.NewClient(opt)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("reach redis at %s: %w", opt.Addr, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisBus{rdb: rdb, ps: rdb.Subscribe(ctx), log: log}, nil
}

func (b *RedisBus) Join(ctx context.Context, id keys.PeerID) error {
	return b.ps.Subscribe(ctx, busPrefix+string(id))
}

func (b *RedisBus) Leave(ctx context.Context, id keys.PeerID) error {
	return b.ps.Unsubscribe(ctx, busPrefix+string(id))
}

func (b *RedisBus) Publish(ctx context.Context, m Message) (bool, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	n, err := b.rdb.Publish(ctx, busPrefix+string(m.To), raw).Result()
	return n > 0, err
}

func (b *RedisBus) Online(ctx context.Context, id keys.PeerID) (bool, error) {
	ch := busPrefix + string(id)
	n, err := b.rdb.PubSubNumSub(ctx, ch).Result()
	return n[ch] > 0, err
}

// Run delivers the messages published for this instance's peers until ctx
// is done, then closes the connection to Redis.
func (b *RedisBus) Run(ctx context.Context, deliver func(Message)) error {
	defer b.rdb.Close()
	defer b.ps.Close()
	ch := b.ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-ch:
			if !ok {
				return nil
			}
			var m Message
			if err := json.Unmarshal([]byte(msg.Payload), &m); err != nil || string(m.To) != msg.Channel[len(busPrefix):] {
				b.log.Warn("bad message on the signaling bus", "channel", msg.Channel)
				continue
			}
			deliver(m)
		}
	}
}
