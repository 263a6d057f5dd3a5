// go-noop-plugin: the Go reference NRI plugin for nri-podres' overhead
// measurements and end-to-end harness tests.
//
// It registers with the runtime through github.com/containerd/nri/pkg/stub,
// subscribes to the pod and container lifecycle events, and writes one JSON
// line per event to stdout ({"ts": <unix seconds>, "event": "...", ...}). It
// adjusts nothing unless -cpuset is given, in which case every created
// container is pinned to that CPU list (to prove adjustments land).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

type eventLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (l *eventLog) emit(event string, fields map[string]any) {
	record := map[string]any{"ts": float64(time.Now().UnixMicro()) / 1e6, "event": event}
	for k, v := range fields {
		record[k] = v
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enc.Encode(record); err != nil {
		fmt.Fprintln(os.Stderr, "go-noop-plugin: log:", err)
	}
}

type plugin struct {
	log    *eventLog
	cpuset string
}

func podFields(p *api.PodSandbox) map[string]any {
	return map[string]any{"pod": p.GetNamespace() + "/" + p.GetName(), "pod_uid": p.GetUid()}
}

func containerFields(p *api.PodSandbox, c *api.Container) map[string]any {
	f := podFields(p)
	f["container"] = c.GetName()
	f["container_id"] = c.GetId()
	return f
}

func (p *plugin) Configure(_ context.Context, _, runtime, version string) (api.EventMask, error) {
	p.log.emit("plugin_configured", map[string]any{"runtime": runtime, "runtime_version": version})
	return 0, nil // 0: every event this plugin implements
}

func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p.log.emit("plugin_synchronized", map[string]any{"pods": len(pods), "containers": len(ctrs)})
	return nil, nil
}

func (p *plugin) Shutdown(_ context.Context) {
	p.log.emit("plugin_shutdown", nil)
}

func (p *plugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	f := podFields(pod)
	if res := pod.GetLinux().GetPodResources().GetCpu(); res != nil {
		f["shares"] = res.GetShares().GetValue()
		f["quota"] = res.GetQuota().GetValue()
	}
	p.log.emit("run_pod_sandbox", f)
	return nil
}

func (p *plugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.log.emit("stop_pod_sandbox", podFields(pod))
	return nil
}

func (p *plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.log.emit("remove_pod_sandbox", podFields(pod))
	return nil
}

func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	f := containerFields(pod, c)
	if p.cpuset == "" {
		p.log.emit("create_container", f)
		return nil, nil, nil
	}
	f["cpuset_cpus"] = p.cpuset
	p.log.emit("create_container", f)
	adjust := &api.ContainerAdjustment{}
	adjust.SetLinuxCPUSetCPUs(p.cpuset)
	return adjust, nil, nil
}

func (p *plugin) StartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.log.emit("start_container", containerFields(pod, c))
	return nil
}

func (p *plugin) UpdateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container, _ *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	p.log.emit("update_container", containerFields(pod, c))
	return nil, nil
}

func (p *plugin) StopContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.log.emit("stop_container", containerFields(pod, c))
	return nil, nil
}

func (p *plugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.log.emit("remove_container", containerFields(pod, c))
	return nil
}

func main() {
	socket := flag.String("socket", "/var/run/nri/nri.sock", "the runtime's NRI socket")
	name := flag.String("name", "go-noop", "plugin name")
	idx := flag.String("idx", "50", "plugin index (two digits; orders plugins)")
	cpuset := flag.String("cpuset", "", "pin every created container to this CPU list")
	flag.Parse()

	log := &eventLog{enc: json.NewEncoder(os.Stdout)}
	p := &plugin{log: log, cpuset: *cpuset}
	var closed sync.Once
	disconnected := func() { closed.Do(func() { log.emit("plugin_disconnected", nil) }) }
	s, err := stub.New(p,
		stub.WithSocketPath(*socket), stub.WithPluginName(*name), stub.WithPluginIdx(*idx),
		stub.WithOnClose(func() {
			disconnected()
			os.Exit(0)
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-noop-plugin:", err)
		os.Exit(1)
	}
	err = s.Run(context.Background())
	disconnected() // the runtime went away (e.g. restarted); no reconnection
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-noop-plugin:", err)
		os.Exit(1)
	}
}
