package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/consulclient"
	bounded "github.com/tierlock/tierlock/internal/retry"
	"github.com/tierlock/tierlock/internal/safelog"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

// Environment variables the function reads, besides Consul's own (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...) and the AWS SDK's.
const (
	envPrefix         = "TIERLOCK_PREFIX"                 // KV prefix of all tiers; default chef
	envTokenParameter = "TIERLOCK_CONSUL_TOKEN_PARAMETER" // SSM SecureString holding the Consul token
	envLogLevel       = "TIERLOCK_LOG_LEVEL"              // debug, info (default), warn, error
	envConsulTimeout  = "TIERLOCK_CONSUL_TIMEOUT"         // how long Consul may keep failing in one invocation
	envHookNames      = "TIERLOCK_LIFECYCLE_HOOK_NAMES"   // comma-separated: the lifecycle hooks it completes
)

// defaultConsulTimeout is how long one invocation retries Consul errors by default: half the
// shipped function timeout (60s), so that a Consul that stays down fails the invocation, which
// Lambda retries later, rather than timing it out.
const defaultConsulTimeout = 30 * time.Second

// deadlineMargin is kept between the last Consul retry and the invocation's deadline, for the
// lifecycle action and the answer.
const deadlineMargin = 5 * time.Second

// Function is the Lambda handler. main only wires it; tests call Invoke in-process or run the
// built binary against a stand-in Runtime API.
type Function struct {
	// Out receives the JSON log lines.
	Out     io.Writer
	Version string
	// Getenv reads the function's own settings (TIERLOCK_*); nil: the process environment.
	// ConsulConfig is the Consul client's configuration, before the token from SSM; nil:
	// api.DefaultConfig, from CONSUL_HTTP_ADDR and the rest of Consul's environment. Tests
	// set both to run invocations side by side, each against its own proxy and prefix.
	Getenv       func(string) string
	ConsulConfig func() *api.Config

	mu    sync.Mutex
	deps  *deps // set by the first cold start that succeeds
	logMu sync.Mutex
	cur   *logrus.Entry // the current invocation's logger, for StdLog
}

// deps is what a cold start sets up, once per process.
type deps struct {
	reaper        *monitor.Reaper
	lifecycle     *autoscaling.Client
	consulTimeout time.Duration
	// hookNames are the lifecycle hooks the function completes. Other teams' hooks on the
	// same groups (a drain, a backup) are theirs to complete: CONTINUE from us would cut
	// their work short and terminate the instance under them.
	hookNames []string
}

// result is the function's answer, for whoever invoked it (and the tests).
type result struct {
	Event      string      `json:"event"`
	InstanceID string      `json:"instance_id,omitempty"`
	Ignored    string      `json:"ignored,omitempty"`
	Freed      []freedSlot `json:"freed"`
	Lifecycle  string      `json:"lifecycle_action,omitempty"`
}

type freedSlot struct {
	Tier   string `json:"tier"`
	Holder string `json:"holder"`
	State  string `json:"state,omitempty"`
	Queued bool   `json:"queued,omitempty"` // a queue entry, not a slot
	// Converged marks a converged/ record, not a slot: the instance is no longer expected to
	// converge.
	Converged bool `json:"converged,omitempty"`
}

// Invoke handles one event. It takes the raw payload, so that a payload which is not even
// JSON is logged (with the request id) and refused like any other malformed event.
func (f *Function) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	requestID := "unknown"
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		requestID = lc.AwsRequestID
	}
	log := f.logger().WithField("request_id", requestID)
	f.logMu.Lock()
	f.cur = log
	f.logMu.Unlock()

	res, err := f.handle(ctx, log, payload)
	if err != nil {
		log.WithError(err).Error("event not handled; Lambda retries it, then sends it to the dead-letter queue")
		return nil, err
	}
	return json.Marshal(res)
}

func (f *Function) handle(ctx context.Context, log *logrus.Entry, payload []byte) (result, error) {
	// First, whatever the event: the log then shows at once who the function runs as and
	// where Consul is, and a function that cannot start fails loudly (the errors alarm).
	d, err := f.coldStart(ctx, log)
	if err != nil {
		return result{}, err
	}
	a, err := decodeEvent(payload)
	if err != nil {
		return result{}, err // a malformed event changes nothing
	}
	log = log.WithField("event", a.event)
	res := result{Event: a.event, InstanceID: a.instanceID, Freed: []freedSlot{}}
	if a.ignore != "" {
		log.Infof("ignored: %s", a.ignore)
		res.Ignored = a.ignore
		return res, nil
	}
	log = log.WithField("instance_id", a.instanceID)
	rep, err := d.reap(ctx, log, monitor.ByInstance(a.instanceID))
	for _, u := range rep.Unread {
		// Logged, not failed: the other tiers are reaped, and failing would only repeat the
		// event until the junk is deleted (check reports the tier CRITICAL meanwhile).
		log.WithError(u).Warn("tier not read: a slot of this instance there, if any, is not freed")
	}
	for _, s := range rep.Freed {
		switch {
		case s.Queued:
			log.WithFields(logrus.Fields{"tier": s.Tier, "holder": s.Holder}).Info("queue entry removed")
		case s.Converged:
			log.WithFields(logrus.Fields{"tier": s.Tier, "holder": s.Holder}).Info("convergence record removed")
		default:
			log.WithFields(logrus.Fields{"tier": s.Tier, "holder": s.Holder, "state": s.State}).Info("slot freed")
		}
		res.Freed = append(res.Freed, freedSlot{Tier: s.Tier, Holder: s.Holder, State: string(s.State), Queued: s.Queued, Converged: s.Converged})
	}
	if err != nil {
		return result{}, err
	}
	if len(rep.Freed) == 0 {
		log.Info("no slot or queue entry of this instance (already freed, or it held none)")
	}
	if a.lifecycle != nil {
		if !slices.Contains(d.hookNames, a.lifecycle.hook) {
			// The slots are freed all the same: the instance is going away whoever's hook this is.
			log.WithFields(logrus.Fields{"autoscaling_group": a.lifecycle.group, "lifecycle_hook": a.lifecycle.hook,
				"our_hooks": strings.Join(d.hookNames, ",")}).
				Infof("lifecycle action not completed: hook %q is not named in %s", a.lifecycle.hook, envHookNames)
			res.Lifecycle = lifecycleNotOurs
			return res, nil
		}
		if res.Lifecycle, err = completeLifecycle(ctx, log, d.lifecycle, a); err != nil {
			return result{}, err
		}
	}
	return res, nil
}

// lifecycleNotOurs is the answer's lifecycle_action for a hook the function leaves alone.
const lifecycleNotOurs = "NOT_OURS"

// parseHookNames reads TIERLOCK_LIFECYCLE_HOOK_NAMES: hook names separated by commas, blanks
// around them ignored. None named means no lifecycle action is ever completed. A name Auto
// Scaling could not have ([A-Za-z0-9-_/], 1 to 255 characters) is a mistake in the
// configuration, refused at the cold start so that it shows in the errors alarm.
func parseHookNames(v string) ([]string, error) {
	var names []string
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !hookNamePattern.MatchString(n) {
			return nil, fmt.Errorf("%s: %q is not a lifecycle hook name (1 to 255 of A-Z a-z 0-9 - _ /)", envHookNames, clipName(n))
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names, nil
}

// hookNamePattern is Auto Scaling's for LifecycleHookName.
var hookNamePattern = regexp.MustCompile(`^[A-Za-z0-9_/-]{1,255}$`)

// clipName keeps an error about a bad value short.
func clipName(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}

// reap frees what match selects, retrying Consul errors that may pass (reaping is idempotent,
// and frees only what it first saw) by tierlock's one retry policy: backoff with jitter,
// giving up within 1.25 × the Consul timeout of the first failure, whatever succeeds in
// between. The reaping and the read of what it freed share that budget, which is cut to end
// before the invocation's deadline.
func (d *deps) reap(ctx context.Context, log *logrus.Entry, match monitor.Match) (monitor.Report, error) {
	timeout := d.consulTimeout
	if deadline, ok := ctx.Deadline(); ok {
		// At least a moment: a zero budget would mean no bound at all.
		left := time.Until(deadline) - deadlineMargin
		timeout = max(time.Millisecond, min(timeout, time.Duration(float64(left)/bounded.Overrun)))
	}
	budget := bounded.Policy{
		Timeout: timeout, Request: consulclient.RequestTimeout(d.consulTimeout),
		Notify: func(what string, err error, next time.Duration) {
			log.WithError(err).Warnf("%s: consul error, retrying in %s", what, next.Round(time.Millisecond))
		},
	}.Budget()
	return d.reaper.Reap(ctx, match, budget.Do)
}

// completeLifecycle tells Auto Scaling to go on terminating the instance, now that its slots
// are free. An action that is no longer pending (completed by an earlier delivery of the same
// event, or timed out) is not an error: a repeated event must not end in the dead-letter queue.
func completeLifecycle(ctx context.Context, log *logrus.Entry, c *autoscaling.Client, a action) (string, error) {
	_, err := c.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(a.lifecycle.group),
		LifecycleHookName:     aws.String(a.lifecycle.hook),
		LifecycleActionToken:  aws.String(a.lifecycle.token),
		InstanceId:            aws.String(a.instanceID),
		LifecycleActionResult: aws.String("CONTINUE"),
	})
	log = log.WithFields(logrus.Fields{"autoscaling_group": a.lifecycle.group, "lifecycle_hook": a.lifecycle.hook})
	var apiErr smithy.APIError
	switch {
	case err == nil:
		log.Info("lifecycle action completed: CONTINUE")
		return "CONTINUE", nil
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "ValidationError" && strings.Contains(apiErr.ErrorMessage(), "No active Lifecycle Action"):
		log.WithError(err).Warn("lifecycle action no longer pending (completed earlier or timed out)")
		return "NOT_PENDING", nil
	default:
		return "", fmt.Errorf("complete lifecycle action %s/%s: %w", a.lifecycle.group, a.lifecycle.hook, err)
	}
}

// coldStart sets up the AWS clients, the Consul token and client, once per process, and logs
// who the function runs as and which Consul it talks to. A failure is not remembered: the next
// invocation tries again.
func (f *Function) coldStart(ctx context.Context, log *logrus.Entry) (*deps, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deps != nil {
		return f.deps, nil
	}
	prefix := strings.Trim(f.getenv(envPrefix), "/")
	if prefix == "" {
		prefix = schema.DefaultPrefix
	}
	if err := schema.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("%s: %w", envPrefix, err)
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	identity := "unknown"
	if out, err := sts.NewFromConfig(awsCfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		// Only for the log: the function can work without knowing.
		log.WithError(err).Warn("could not learn the identity the function runs as")
	} else {
		identity = aws.ToString(out.Arn)
	}

	consulCfg := api.DefaultConfig()
	if f.ConsulConfig != nil {
		consulCfg = f.ConsulConfig()
	}
	if name := f.getenv(envTokenParameter); name != "" {
		out, err := ssm.NewFromConfig(awsCfg).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
		if err != nil {
			return nil, fmt.Errorf("consul token from SSM parameter %s: %w", name, err)
		}
		if out.Parameter == nil || aws.ToString(out.Parameter.Value) == "" {
			return nil, fmt.Errorf("consul token from SSM parameter %s: the parameter is empty", name)
		}
		consulCfg.Token, consulCfg.TokenFile = aws.ToString(out.Parameter.Value), ""
	}
	client, err := consulclient.FromConfig(consulCfg)
	if err != nil {
		return nil, err
	}
	consulTimeout := defaultConsulTimeout
	if v := f.getenv(envConsulTimeout); v != "" {
		if consulTimeout, err = time.ParseDuration(v); err != nil || consulTimeout <= 0 {
			return nil, fmt.Errorf("%s %q: want a positive duration such as 30s", envConsulTimeout, v)
		}
	}
	hookNames, err := parseHookNames(f.getenv(envHookNames))
	if err != nil {
		return nil, err
	}
	reaper, err := monitor.NewReaper(client.KV(), monitor.Options{Prefix: prefix, RequestTimeout: consulclient.RequestTimeout(consulTimeout), ReadBatch: lambdaReadBatch})
	if err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{
		"identity": identity, "consul_address": consulAddress(consulCfg), "consul_token": f.tokenSource(),
		"prefix": prefix, "version": f.Version, "region": awsCfg.Region, "lifecycle_hooks": strings.Join(hookNames, ","),
	}).Info("cold start")
	if len(hookNames) == 0 {
		log.Warnf("%s names no lifecycle hook: slots are freed, but no lifecycle action is completed", envHookNames)
	}
	f.deps = &deps{reaper: reaper, lifecycle: autoscaling.NewFromConfig(awsCfg), consulTimeout: consulTimeout, hookNames: hookNames}
	return f.deps, nil
}

// consulAddress is the address as a URL, so the log shows whether TLS is used.
func consulAddress(cfg *api.Config) string {
	if strings.Contains(cfg.Address, "://") {
		return cfg.Address
	}
	return cfg.Scheme + "://" + cfg.Address
}

// getenv is the setting key, from Getenv or the process environment.
func (f *Function) getenv(key string) string {
	if f.Getenv != nil {
		return f.Getenv(key)
	}
	return os.Getenv(key)
}

// tokenSource says where the Consul token came from, never what it is.
func (f *Function) tokenSource() string {
	switch {
	case f.getenv(envTokenParameter) != "":
		return "ssm:" + f.getenv(envTokenParameter)
	case os.Getenv(api.HTTPTokenEnvName) != "":
		return "env:" + api.HTTPTokenEnvName
	case os.Getenv(api.HTTPTokenFileEnvName) != "":
		return "file:" + os.Getenv(api.HTTPTokenFileEnvName)
	}
	return "none"
}

// logger builds the JSON logger. Lambda sends what the function writes to CloudWatch Logs.
func (f *Function) logger() *logrus.Logger {
	l := logrus.New()
	l.Out = f.Out
	// Holders, nodes and keys in the lines come from Consul: through the one sanitiser.
	l.Formatter = safelog.Formatter{Inner: &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}}
	if level, err := logrus.ParseLevel(f.getenv(envLogLevel)); err == nil {
		l.Level = level
	}
	return l
}

// StdLog is a writer for the standard log package, through which aws-lambda-go reports the
// errors it sends back: its lines are logged as errors of the current invocation, so they
// carry the request id too.
func (f *Function) StdLog() io.Writer { return stdLog{f} }

type stdLog struct{ f *Function }

func (s stdLog) Write(p []byte) (int, error) {
	s.f.logMu.Lock()
	log := s.f.cur
	s.f.logMu.Unlock()
	if log == nil {
		log = s.f.logger().WithField("request_id", "none")
	}
	log.WithField("from", "aws-lambda-go").Error(strings.TrimSpace(string(p)))
	return len(p), nil
}

// lambdaReadBatch is how many values the function fetches per transaction: 4 × 512 KB of junk
// at most in one answer keeps its peak far within 128 MB (TestBootstrapJunk measures it).
const lambdaReadBatch = 4
