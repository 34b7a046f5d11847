package cluster

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// SpreadDeployment is a Deployment named name of replicas pods running c,
// at most one per node (a required anti-affinity on the hostname), labeled
// app=name: the shape tests use to prove something on every node.
func SpreadDeployment(name string, replicas int32, c corev1.Container) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
							TopologyKey:   corev1.LabelHostname,
						}},
					}},
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers:                    []corev1.Container{c},
				},
			},
		},
	}
}

// ClientPod is a pod that runs image (one PushRunnableImage made: the
// waiter program) once with args on node: "-get URL", "-post URL BODY",
// "-touch PATH".
func ClientPod(name, node, image string, hostNetwork bool, args ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			HostNetwork:   hostNetwork,
			Containers:    []corev1.Container{{Name: "main", Image: image, Args: args}},
		},
	}
	if hostNetwork {
		p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	return p
}

// RunToCompletion creates pod, waits until it has ended and returns its
// log; a pod that failed fails the test.
func (c *Cluster) RunToCompletion(ctx context.Context, t testing.TB, pod *corev1.Pod) string {
	t.Helper()
	pods := c.Client().CoreV1().Pods("default")
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	var got *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = p
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		t.Fatalf("pod %s did not complete: %v (%+v)", pod.Name, err, got.Status)
	}
	out, err := c.ContainerLog(got, "main")
	if err != nil {
		t.Fatalf("pod %s: %v", pod.Name, err)
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Errorf("pod %s on %s failed: %s", pod.Name, pod.Spec.NodeName, out)
	}
	return out
}
