// Package imds asks the EC2 instance metadata service (IMDSv2) for the instance id, so that a
// held slot records which instance holds it and the termination hook can free it.
package imds

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// defaultEndpoint is the metadata service's address on EC2. The AWS SDKs' environment variable
// AWS_EC2_METADATA_SERVICE_ENDPOINT overrides it (and tests point it at a local server).
const defaultEndpoint = "http://169.254.169.254"

// Endpoint returns the metadata endpoint from the environment, or defaultEndpoint.
func Endpoint() string {
	if e := os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"); e != "" {
		return strings.TrimRight(e, "/")
	}
	return defaultEndpoint
}

// InstanceID fetches the instance id with an IMDSv2 session token. It tries three times:
// the service answers in milliseconds on EC2, and not at all elsewhere.
func InstanceID(ctx context.Context, endpoint string) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(try) * 200 * time.Millisecond):
			}
		}
		var id string
		if id, err = instanceID(ctx, client, endpoint); err == nil {
			return id, nil
		}
	}
	return "", fmt.Errorf("imds: instance id from %s: %w", endpoint, err)
}

func instanceID(ctx context.Context, client *http.Client, endpoint string) (string, error) {
	token, err := call(ctx, client, http.MethodPut, endpoint+"/latest/api/token",
		"X-aws-ec2-metadata-token-ttl-seconds", "60")
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return call(ctx, client, http.MethodGet, endpoint+"/latest/meta-data/instance-id",
		"X-aws-ec2-metadata-token", token)
}

func call(ctx context.Context, client *http.Client, method, url, header, value string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set(header, value)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: status %d", method, url, resp.StatusCode)
	}
	v := strings.TrimSpace(string(body))
	if v == "" {
		return "", fmt.Errorf("%s %s: empty answer", method, url)
	}
	return v, nil
}
