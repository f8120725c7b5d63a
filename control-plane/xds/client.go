package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Client is an ADS client that subscribes to the meshward filter's ECDS
// resource as an Envoy does (state of the world): `meshward run` uses it to
// configure the emulated sidecars, tests use it to stand in for Envoys.
type Client struct {
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	Node   *corev3.Node
}

// Node returns an Envoy node of a workload and namespace, with the metadata
// Istio's sidecars carry (WORKLOAD_NAME, NAMESPACE).
func Node(id, workload, namespace string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"WORKLOAD_NAME": workload, "NAMESPACE": namespace})
	return &corev3.Node{Id: id, Metadata: md}
}

// Dial opens an ADS stream to addr as node, in plain text, and subscribes to
// the filter.
func Dial(addr string, node *corev3.Node) (*Client, error) {
	return dialWith(addr, node, insecure.NewCredentials())
}

// DialTLS is Dial over TLS (tc holds the client certificate, for mTLS).
func DialTLS(addr string, node *corev3.Node, tc *tls.Config) (*Client, error) {
	return dialWith(addr, node, credentials.NewTLS(tc))
}

func dialWith(addr string, node *corev3.Node, creds credentials.TransportCredentials) (*Client, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("ADS stream to %s: %w", addr, err)
	}
	c := &Client{conn: conn, stream: st, cancel: cancel, Node: node}
	return c, c.send("", "", nil)
}

func (c *Client) send(version, nonce string, nack *status.Status) error {
	return c.stream.Send(&discoveryv3.DiscoveryRequest{Node: c.Node, TypeUrl: resourcev3.ExtensionConfigType,
		ResourceNames: []string{FilterName}, VersionInfo: version, ResponseNonce: nonce, ErrorDetail: nack})
}

// Update is one configuration received.
type Update struct {
	Version, Nonce string
	// PluginConfig is the Wasm plugin's configuration (the JSON document
	// the filter parses).
	PluginConfig []byte
	Wasm         *wasmfilterv3.Wasm
}

// Recv waits for the next configuration (until the stream ends).
func (c *Client) Recv() (*Update, error) {
	resp, err := c.stream.Recv()
	if err != nil {
		return nil, err
	}
	if len(resp.Resources) != 1 {
		return nil, fmt.Errorf("version %s: %d resources, want 1", resp.VersionInfo, len(resp.Resources))
	}
	ext := &corev3.TypedExtensionConfig{}
	if err := resp.Resources[0].UnmarshalTo(ext); err != nil {
		return nil, err
	}
	w := &wasmfilterv3.Wasm{}
	if err := ext.GetTypedConfig().UnmarshalTo(w); err != nil {
		return nil, err
	}
	if err := w.ValidateAll(); err != nil {
		return nil, err
	}
	sv := &wrapperspb.StringValue{}
	if err := w.GetConfig().GetConfiguration().UnmarshalTo(sv); err != nil {
		return nil, err
	}
	return &Update{Version: resp.VersionInfo, Nonce: resp.Nonce, PluginConfig: []byte(sv.Value), Wasm: w}, nil
}

// ACK accepts an update.
func (c *Client) ACK(u *Update) error { return c.send(u.Version, u.Nonce, nil) }

// NACK refuses an update, keeping the version last accepted.
func (c *Client) NACK(u *Update, accepted string, why error) error {
	if why == nil {
		why = errors.New("refused")
	}
	return c.send(accepted, u.Nonce, &status.Status{Code: 3, Message: why.Error()})
}

// Close ends the stream.
func (c *Client) Close() error {
	c.cancel()
	return c.conn.Close()
}
