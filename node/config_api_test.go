package node

import (
	"context"
	"testing"
	"time"
)

// TestConfigAPI: GET /v1/config answers a daemon's effective configuration, defaults
// filled in, with the keys of `gridnode run`'s flags.
func TestConfigAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _ := openGrid(t, ctx, 2, echoRunner)
	_, api := openDaemon(t, ctx, t.TempDir(), ws[0].AddrStrings())
	var c ConfigInfo
	if err := api.Get(ctx, "/v1/config", &c); err != nil {
		t.Fatal(err)
	}
	if !c.Worker || c.Slots < 1 || c.SlotsPerPeer < 1 || c.StoreQuota <= 0 || c.Limits["memory"] == 0 || c.Limits["wall_ms"] == 0 || len(c.Bootstrap) == 0 || c.DataDir == "" {
		t.Errorf("config %+v: want a worker's effective configuration with its defaults", c)
	}
	var bad map[string]any
	if err := api.Get(ctx, "/v1/config/nope", &bad); err == nil {
		t.Error("GET /v1/config/nope: got no error, want a 404")
	}
}
