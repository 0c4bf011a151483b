package pollsse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(RedisStore{})
}

// Defaults of the redis store.
const (
	defaultRedisPrefix = "poll_sse:"
	defaultLease       = 5 * time.Second
)

// RedisStore shares the topics of every Caddy instance whose handler names
// the same Redis and prefix: of the instances with subscribers to a topic,
// one polls it (it holds the topic's lease), events are numbered and kept in
// Redis, and each instance reads each of its topics from Redis once and
// fans the events out to its own subscribers. An id from any instance
// resumes on every other. See the README's "Several instances".
type RedisStore struct {
	// The Redis to use: redis://[user:password@]host:port[/db], rediss://
	// for TLS, with go-redis's options in the query (dial_timeout,
	// pool_size, …); a URL with addr=host:port parameters names the seed
	// nodes of a Redis Cluster. The password appears in no log line or
	// error. Caddy's global placeholders, such as {env.REDIS_PASSWORD} or
	// {file./run/secrets/redis}, are read when the configuration loads.
	// Required.
	URL string `json:"url,omitempty"`

	// What the names of every key and channel of the store begin with, so
	// that several stores can share one Redis. Default: "poll_sse:".
	Prefix string `json:"prefix,omitempty"`

	// How long a poller's lease on a topic lasts without renewal: when the
	// instance that polls a topic dies, another takes over within this
	// long. Renewed three times per lease; must be longer than the
	// handler's interval. Default: 5s.
	Lease caddy.Duration `json:"lease,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.poll_sse.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	redis [<url>] {
//	    url    <url>        # redis://[user:pass@]host:port[/db], rediss:// for TLS, ?addr=… for a Cluster
//	    prefix <string>     # key prefix, default "poll_sse:"
//	    lease  <duration>   # how long a poller's lease lasts without renewal, default 5s
//	}
func (s *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the module name
	if d.NextArg() {
		s.URL = d.Val()
		if d.NextArg() {
			return d.Errf("store redis: unexpected argument '%s' after the URL", d.Val())
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if !d.NextArg() {
			return d.Errf("store redis: %s: want a value", name)
		}
		switch name {
		case "url":
			if s.URL != "" {
				return d.Errf("store redis: url: given twice")
			}
			s.URL = d.Val()
		case "prefix":
			s.Prefix = d.Val()
		case "lease":
			lease, err := caddy.ParseDuration(d.Val())
			if err != nil || lease <= 0 {
				return d.Errf("store redis: lease: want a positive duration, not '%s'", d.Val())
			}
			s.Lease = caddy.Duration(lease)
		default:
			return d.Errf("store redis: unrecognized option '%s'", name)
		}
		if d.NextArg() {
			return d.Errf("store redis: %s: unexpected argument '%s'", name, d.Val())
		}
	}
	if err := s.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// Provision sets the store's defaults.
func (s *RedisStore) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	setRedisLogger()
	if err := storeMetrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("store redis: registering metrics: %w", err)
	}
	if s.Prefix == "" {
		s.Prefix = defaultRedisPrefix
	}
	if s.Lease == 0 {
		s.Lease = caddy.Duration(defaultLease)
	}
	return s.Validate()
}

// Validate checks the store's options; its errors name the option and the
// value, the URL without its password.
func (s *RedisStore) Validate() error {
	if s.URL == "" {
		return errors.New("store redis: url: required")
	}
	if _, err := parseRedisURL(s.url()); err != nil {
		return err
	}
	if s.Lease < 0 {
		return fmt.Errorf("store redis: lease: must be positive, not %s", time.Duration(s.Lease))
	}
	if strings.ContainsAny(s.Prefix, "{}") {
		return fmt.Errorf("store redis: prefix %q: must not hold { or }, which make Redis Cluster's hash tags", s.Prefix)
	}
	return nil
}

// url returns the store's URL with its global placeholders replaced.
func (s *RedisStore) url() string {
	return caddy.NewReplacer().ReplaceKnown(s.URL, "")
}

func (s *RedisStore) leaseDuration() time.Duration {
	if s.Lease == 0 {
		return defaultLease
	}
	return time.Duration(s.Lease)
}

// redisClients holds one client per Redis URL and prefix, shared by every
// hub of this process that uses it, across reloads.
var redisClients = caddy.NewUsagePool()

func (s *RedisStore) attach(logger *zap.Logger) (hubStore, error) {
	url := s.url()
	key := url + "\x00" + s.Prefix
	val, _, err := redisClients.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newRedisConn(url, s.Prefix, logger)
	})
	if err != nil {
		return nil, err
	}
	return &redisHubStore{conn: val.(*redisConn), key: key, lease: s.leaseDuration()}, nil
}

// parseRedisURL returns the client options of a store's URL: a Redis
// Cluster's when the URL has addr parameters, else a single Redis's. Its
// errors show the URL without its password.
func parseRedisURL(raw string) (*redis.UniversalOptions, error) {
	fail := func(err error) error {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("store redis: url %q: %v", redactURL(raw), err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fail(err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fail(fmt.Errorf("want a redis:// or rediss:// URL, not %s://", u.Scheme))
	}
	if u.Host == "" {
		return nil, fail(errors.New("no host"))
	}
	if u.Query().Has("addr") {
		opts, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, fail(err)
		}
		return &redis.UniversalOptions{
			Addrs: opts.Addrs, Username: opts.Username, Password: opts.Password, TLSConfig: opts.TLSConfig,
			ClientName: opts.ClientName, Protocol: opts.Protocol,
			DialTimeout: opts.DialTimeout, ReadTimeout: opts.ReadTimeout, WriteTimeout: opts.WriteTimeout,
			PoolSize: opts.PoolSize, MaxRetries: opts.MaxRetries, MinIdleConns: opts.MinIdleConns,
			IsClusterMode: true,
		}, nil
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fail(err)
	}
	return &redis.UniversalOptions{
		Addrs: []string{opts.Addr}, DB: opts.DB, Username: opts.Username, Password: opts.Password, TLSConfig: opts.TLSConfig,
		ClientName: opts.ClientName, Protocol: opts.Protocol,
		DialTimeout: opts.DialTimeout, ReadTimeout: opts.ReadTimeout, WriteTimeout: opts.WriteTimeout,
		PoolSize: opts.PoolSize, MaxRetries: opts.MaxRetries, MinIdleConns: opts.MinIdleConns,
	}, nil
}

var setRedisLoggerOnce sync.Once

// setRedisLogger sends go-redis's own messages (reconnects of its pools) to
// Caddy's log at Debug, instead of standard error.
func setRedisLogger() {
	setRedisLoggerOnce.Do(func() {
		redis.SetLogger(redisLogger{caddy.Log().Named("http.handlers.poll_sse.redis")})
	})
}

type redisLogger struct{ l *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := r.l.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, v...)))
	}
}

// A redisConn is the client of one Redis URL and prefix in this process,
// with the one Pub/Sub connection on which every topic of the process that
// uses it hears of new events.
type redisConn struct {
	client redis.UniversalClient
	prefix string
	logger *zap.Logger

	// secretMu guards key, the shared secret once read.
	secretMu sync.Mutex
	key      []byte

	mu sync.Mutex
	// logs are the open topic logs, by the channel of their topic: one
	// per hub of this process that has the topic.
	logs map[string]map[*redisLog]bool
	// pubsub is the subscription to the channels of logs, nil while
	// there is none; done is closed when its reader has returned.
	pubsub *redis.PubSub
	done   chan struct{}
}

func newRedisConn(rawURL, prefix string, logger *zap.Logger) (*redisConn, error) {
	opts, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	// A store that cannot be reached is found out within a second or
	// two: the instances then poll on by themselves (redislog.go).
	if opts.DialTimeout == 0 {
		opts.DialTimeout = time.Second
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = time.Second
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 1
	}
	opts.DisableIdentity = true
	var client redis.UniversalClient
	if opts.IsClusterMode {
		client = redis.NewClusterClient(opts.Cluster())
	} else {
		client = redis.NewClient(opts.Simple())
	}
	return &redisConn{client: client, prefix: prefix, logger: logger, logs: make(map[string]map[*redisLog]bool)}, nil
}

// Destruct closes the client when no hub uses it any more.
func (c *redisConn) Destruct() error {
	return c.client.Close()
}

// secretKey is the key of the secret that keys topic keys and ids.
func (c *redisConn) secretKey() string { return c.prefix + "secret" }

// secret returns the secret that every instance on this Redis and prefix
// shares: made by the first instance that needs it (SET NX), read by the
// others.
func (c *redisConn) secret(ctx context.Context) ([]byte, error) {
	c.secretMu.Lock()
	defer c.secretMu.Unlock()
	if c.key != nil {
		return c.key, nil
	}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	if err := c.client.SetNX(ctx, c.secretKey(), hex.EncodeToString(fresh), 0).Err(); err != nil {
		return nil, err
	}
	v, err := c.client.Get(ctx, c.secretKey()).Result()
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(v)
	if err != nil || len(key) < 16 {
		return nil, fmt.Errorf("the key %s does not hold a secret of this store", c.secretKey())
	}
	c.key = key
	return key, nil
}

// keepSecret writes the secret back if its key is gone (a FLUSHALL, a
// Redis restarted empty), so that instances that start later key their
// topics as this one does.
func (c *redisConn) keepSecret(ctx context.Context) {
	c.secretMu.Lock()
	key := c.key
	c.secretMu.Unlock()
	if key != nil {
		c.client.SetNX(ctx, c.secretKey(), hex.EncodeToString(key), 0)
	}
}

// listen subscribes l to the channel of its topic.
func (c *redisConn) listen(l *redisLog) {
	c.mu.Lock()
	if c.logs[l.keys.channel] == nil {
		c.logs[l.keys.channel] = make(map[*redisLog]bool)
	}
	c.logs[l.keys.channel][l] = true
	if c.pubsub == nil {
		c.pubsub = c.client.Subscribe(context.Background())
		c.done = make(chan struct{})
		go c.read(c.pubsub, c.done)
	}
	ps := c.pubsub
	c.mu.Unlock()
	// A channel that cannot be subscribed now, Redis being unreachable,
	// is subscribed when the connection is made again.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ps.Subscribe(ctx, l.keys.channel)
}

// forget unsubscribes l, and closes the Pub/Sub connection when it was the
// last topic.
func (c *redisConn) forget(l *redisLog) {
	c.mu.Lock()
	delete(c.logs[l.keys.channel], l)
	others := len(c.logs[l.keys.channel]) > 0
	if !others {
		delete(c.logs, l.keys.channel)
	}
	ps, done := c.pubsub, c.done
	last := len(c.logs) == 0
	if last {
		c.pubsub, c.done = nil, nil
	}
	c.mu.Unlock()
	if ps == nil || others {
		return
	}
	if !last {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ps.Unsubscribe(ctx, l.keys.channel)
		return
	}
	ps.Close()
	<-done
}

// read hands each notice of the subscription to its topic's log, and each
// (re)subscription too: notices are lost while the connection is down, so
// a topic whose channel is subscribed anew reads its log again.
func (c *redisConn) read(ps *redis.PubSub, done chan struct{}) {
	defer close(done)
	for msg := range ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)) {
		var channel string
		switch m := msg.(type) {
		case *redis.Message:
			channel = m.Channel
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			channel = m.Channel
		default:
			continue
		}
		c.mu.Lock()
		for l := range c.logs[channel] {
			l.kick()
		}
		c.mu.Unlock()
	}
}

// A redisHubStore is a hub's use of a redisConn.
type redisHubStore struct {
	conn  *redisConn
	key   string
	lease time.Duration
}

func (s *redisHubStore) secret(ctx context.Context) ([]byte, error) { return s.conn.secret(ctx) }

func (s *redisHubStore) open(t topicRef) eventLog {
	return newRedisLog(s.conn, t, s.lease)
}

func (s *redisHubStore) Close() error {
	_, err := redisClients.Delete(s.key)
	return err
}

var (
	_ store                 = (*RedisStore)(nil)
	_ leasedStore           = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)

// storeMetrics are the redis store's Prometheus metrics, process-wide like
// the handler's (metrics.go), registered into the registry of every
// configuration that has a redis store.
var storeMetrics = newStoreMetrics()

type redisStoreMetrics struct {
	// down counts the topics of this instance whose store does not
	// answer: they are polled here alone.
	down prometheus.Gauge
	// held counts the topics whose lease this instance holds.
	held   prometheus.Gauge
	errors prometheus.Counter
	leases *prometheus.CounterVec
	// taken and lost are the children of leases.
	taken, lost prometheus.Counter
}

func newStoreMetrics() *redisStoreMetrics {
	const ns, sub = "caddy", "http"
	m := &redisStoreMetrics{
		down: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_store_topics_down",
			Help: "Topics of poll_sse whose redis store does not answer; this instance polls them alone meanwhile.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_store_leases_held",
			Help: "Topics of poll_sse whose lease in the redis store this instance holds: the topics it polls for all instances.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_store_errors_total",
			Help: "Calls of poll_sse to its redis store that failed.",
		}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_store_lease_changes_total",
			Help: "Leases of poll_sse topics that this instance took or lost (to another instance, or as its write was refused).",
		}, []string{"change"}),
	}
	m.taken = m.leases.WithLabelValues("taken")
	m.lost = m.leases.WithLabelValues("lost")
	return m
}

// register adds the metrics to reg, as handlerMetrics.register does.
func (m *redisStoreMetrics) register(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.down, m.held, m.errors, m.leases} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) && are.ExistingCollector == c {
				continue
			}
			return err
		}
	}
	return nil
}
