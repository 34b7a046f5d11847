package restart

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Workload kinds Restart handles.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
)

// workload is the part of a Deployment, StatefulSet or DaemonSet a restart
// looks at, over the typed object it came from.
type workload struct {
	kind     string
	obj      client.Object
	template *corev1.PodTemplateSpec
	// paused: a Deployment with spec.paused; the deployment controller would
	// not roll it out, so kubectl refuses to restart it.
	paused bool
	// onDelete: the update strategy replaces pods only when someone deletes
	// them, so a template change restarts nothing.
	onDelete bool
}

func newWorkload(obj client.Object) (workload, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return workload{kind: KindDeployment, obj: o, template: &o.Spec.Template, paused: o.Spec.Paused}, nil
	case *appsv1.StatefulSet:
		return workload{kind: KindStatefulSet, obj: o, template: &o.Spec.Template,
			onDelete: o.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType}, nil
	case *appsv1.DaemonSet:
		return workload{kind: KindDaemonSet, obj: o, template: &o.Spec.Template,
			onDelete: o.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType}, nil
	}
	return workload{}, fmt.Errorf("rollout: unsupported workload type %T", obj)
}

func (w workload) ref() WorkloadRef {
	return WorkloadRef{Kind: w.kind, Namespace: w.obj.GetNamespace(), Name: w.obj.GetName()}
}

// lists are the three kinds' list types, in the order a wave walks them.
func lists() []client.ObjectList {
	return []client.ObjectList{&appsv1.DeploymentList{}, &appsv1.StatefulSetList{}, &appsv1.DaemonSetList{}}
}

// items returns pointers into a list returned by lists.
func items(l client.ObjectList) []client.Object {
	var out []client.Object
	switch l := l.(type) {
	case *appsv1.DeploymentList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *appsv1.StatefulSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *appsv1.DaemonSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	}
	return out
}
