// The infrastructure as code beside tierlock-reaper, read as Terraform and CloudFormation read
// it: the rules' event patterns are matched against the Lambda's event fixtures, and the
// wiring (permissions, dead-letter queue, alarm, role) is checked.
package aws_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"gopkg.in/yaml.v3"
)

const fixtures = "../../cmd/tierlock-reaper/testdata/events"

// fires says which rule each fixture must trigger: "ec2", "autoscaling", "lifecycle" or none
// (""). An event the function then refuses (no instance id) still fires: the pattern cannot
// know. Another account's events, and another team's lifecycle hook, fire nothing.
var fires = map[string]string{
	"ec2-terminated.json":                            "ec2",
	"ec2-shutting-down.json":                         "ec2",
	"ec2-terminated-no-instance.json":                "ec2",
	"ec2-terminated-other-account.json":              "",
	"ec2-running.json":                               "",
	"asg-terminate-successful.json":                  "autoscaling",
	"asg-terminate-lifecycle-action.json":            "lifecycle",
	"asg-terminate-lifecycle-action-other-hook.json": "",
	"asg-launch-successful.json":                     "",
}

// The deployment the templates are evaluated for: the fixtures' account, the default hook.
const (
	account = "123456789012"
	ourHook = "tierlock-free-slots"
)

// The role's whole list of allowed actions: anything more is not least privilege.
var wantActions = []string{
	"autoscaling:CompleteLifecycleAction",
	"ec2:AssignPrivateIpAddresses", "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface",
	"ec2:DescribeNetworkInterfaces", "ec2:UnassignPrivateIpAddresses",
	"kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage", "ssm:GetParameter",
}

// vpcSid is the one statement allowed Resource "*" (Lambda's network interfaces).
const vpcSid = "VpcNetworkInterfaces"

// loadEvents reads every fixture that is an EventBridge event (malformed.json is not JSON and
// could never come from EventBridge); each must be listed in fires.
func loadEvents(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(fixtures, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures in %s: %v", fixtures, err)
	}
	events := map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ev map[string]any
		if json.Unmarshal(b, &ev) != nil {
			continue
		}
		name := filepath.Base(f)
		if _, ok := fires[name]; !ok {
			t.Errorf("fixture %s: say in fires which rule it triggers", name)
		}
		events[name] = ev
	}
	if len(events) != len(fires) {
		t.Errorf("%d event fixtures, %d in fires", len(events), len(fires))
	}
	return events
}

// matches reports whether event matches an EventBridge pattern, for the part of the pattern
// syntax the templates use: objects nest, arrays list accepted exact values. Anything else
// (content filters such as prefix or anything-but) is an error, so that a template using one
// is not passed by accident.
func matches(pattern, event map[string]any) (bool, error) {
	for k, p := range pattern {
		ev, present := event[k]
		switch p := p.(type) {
		case map[string]any:
			sub, ok := ev.(map[string]any)
			if !present || !ok {
				return false, nil
			}
			if m, err := matches(p, sub); err != nil || !m {
				return false, err
			}
		case []any:
			if !present {
				return false, nil
			}
			values := []any{ev}
			if list, ok := ev.([]any); ok {
				values = list
			}
			found := false
			for _, want := range p {
				switch want.(type) {
				case string, float64, bool:
				default:
					return false, fmt.Errorf("pattern %q: %v is not an exact value this test understands", k, want)
				}
				if slices.Contains(values, want) {
					found = true
				}
			}
			if !found {
				return false, nil
			}
		default:
			return false, fmt.Errorf("pattern %q: %v is neither an object nor an array", k, p)
		}
	}
	return true, nil
}

// checkPatterns matches each rule's pattern against every fixture.
func checkPatterns(t *testing.T, patterns map[string]map[string]any) {
	t.Helper()
	if len(patterns) != 3 || patterns["ec2"] == nil || patterns["autoscaling"] == nil || patterns["lifecycle"] == nil {
		t.Fatalf("want the ec2, autoscaling and lifecycle rules, got %d patterns", len(patterns))
	}
	for rule, p := range patterns {
		if !equal(p["account"], []any{account}) {
			t.Errorf("rule %s: account %v, want this account's only", rule, p["account"])
		}
	}
	for name, ev := range loadEvents(t) {
		for rule, pattern := range patterns {
			got, err := matches(pattern, ev)
			if err != nil {
				t.Fatalf("rule %s: %v", rule, err)
			}
			if want := fires[name] == rule; got != want {
				t.Errorf("rule %s on %s: fires %v, want %v", rule, name, got, want)
			}
		}
	}
}

// checkActions checks the role's statements: exactly the expected actions, no wildcard
// action, Resource "*" only for the VPC statement.
func checkActions(t *testing.T, actions map[string][]string, starResources []string) {
	t.Helper()
	var all []string
	for sid, acts := range actions {
		for _, a := range acts {
			if strings.Contains(a, "*") {
				t.Errorf("statement %s allows %q", sid, a)
			}
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	sort.Strings(all)
	if !slices.Equal(all, wantActions) {
		t.Errorf("role actions\n got %v\nwant %v", all, wantActions)
	}
	if len(starResources) != 1 || starResources[0] != vpcSid {
		t.Errorf("statements with Resource \"*\": %v, want only %s", starResources, vpcSid)
	}
}

// --- Terraform ---

type tfModule struct {
	resources map[string]*hclsyntax.Block // "type.name"
	data      map[string]*hclsyntax.Block // "type.name"
	variables map[string]*hclsyntax.Block
	locals    map[string]hcl.Expression
}

func loadTerraform(t *testing.T) tfModule {
	t.Helper()
	files, _ := filepath.Glob("terraform/*.tf")
	if len(files) == 0 {
		t.Fatal("no terraform/*.tf")
	}
	m := tfModule{resources: map[string]*hclsyntax.Block{}, data: map[string]*hclsyntax.Block{}, variables: map[string]*hclsyntax.Block{},
		locals: map[string]hcl.Expression{}}
	p := hclparse.NewParser()
	for _, f := range files {
		file, diags := p.ParseHCLFile(f)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", f, diags.Error())
		}
		for _, b := range file.Body.(*hclsyntax.Body).Blocks {
			switch b.Type {
			case "resource":
				m.resources[b.Labels[0]+"."+b.Labels[1]] = b
			case "data":
				m.data[b.Labels[0]+"."+b.Labels[1]] = b
			case "variable":
				m.variables[b.Labels[0]] = b
			case "locals":
				for name, a := range b.Body.Attributes {
					m.locals[name] = a.Expr
				}
			}
		}
	}
	return m
}

func (m tfModule) ofType(typ string) map[string]*hclsyntax.Block {
	out := map[string]*hclsyntax.Block{}
	for k, b := range m.resources {
		if b.Labels[0] == typ {
			out[k] = b
		}
	}
	return out
}

// refs lists what an expression refers to: "aws_sqs_queue.dead_letters.arn", "var.subnet_ids".
func refs(expr hcl.Expression) []string {
	var out []string
	for _, tr := range expr.Variables() {
		parts := []string{tr.RootName()}
		for _, step := range tr[1:] {
			if a, ok := step.(hcl.TraverseAttr); ok {
				parts = append(parts, a.Name)
			}
		}
		out = append(out, strings.Join(parts, "."))
	}
	return out
}

func attr(t *testing.T, b *hclsyntax.Block, name string) hcl.Expression {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %v has no %s", b.Type, b.Labels, name)
	}
	return a.Expr
}

// literal evaluates an expression that refers to nothing, with Terraform's jsonencode.
func literal(t *testing.T, expr hcl.Expression) any {
	t.Helper()
	return evaluate(t, expr, &hcl.EvalContext{Functions: tfFunctions})
}

// tfFunctions are the Terraform functions the expressions evaluated here use.
var tfFunctions = map[string]function.Function{
	"jsonencode": stdlib.JSONEncodeFunc, "distinct": stdlib.DistinctFunc, "concat": stdlib.ConcatFunc,
	"join": stdlib.JoinFunc, "length": stdlib.LengthFunc,
}

// tfContext is the module's evaluation context for the given variables: var.*, and the locals
// the rules and the role use (local.account as if the module ran in the fixtures' account).
func (m tfModule) tfContext(t *testing.T, vars map[string]cty.Value) *hcl.EvalContext {
	t.Helper()
	ctx := &hcl.EvalContext{Functions: tfFunctions, Variables: map[string]cty.Value{"var": cty.ObjectVal(vars)}}
	locals := map[string]cty.Value{"account": cty.StringVal(account), "arn_prefix": cty.StringVal("arn:aws"), "region": cty.StringVal("eu-west-1")}
	ctx.Variables["local"] = cty.ObjectVal(locals)
	// In order: a local may use those before it.
	for _, name := range []string{"lifecycle_hook_names", "autoscaling_group_names", "autoscaling_group_arns"} {
		expr, ok := m.locals[name]
		if !ok {
			t.Fatalf("no local.%s", name)
		}
		v, diags := expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("local.%s: %s", name, diags.Error())
		}
		locals[name] = v
		ctx.Variables["local"] = cty.ObjectVal(locals)
	}
	return ctx
}

// tfVars are the module's inputs of a deployment: one hook name, and the groups given.
func tfVars(extraHooks, hooked, groups []string) map[string]cty.Value {
	list := func(l []string) cty.Value {
		if len(l) == 0 {
			return cty.ListValEmpty(cty.String)
		}
		var vs []cty.Value
		for _, s := range l {
			vs = append(vs, cty.StringVal(s))
		}
		return cty.ListVal(vs)
	}
	return map[string]cty.Value{
		"lifecycle_hook_name": cty.StringVal(ourHook), "extra_lifecycle_hook_names": list(extraHooks),
		"lifecycle_hook_autoscaling_groups": list(hooked), "autoscaling_group_names": list(groups),
	}
}

// evaluate evaluates an expression in ctx and returns it as plain JSON values.
func evaluate(t *testing.T, expr hcl.Expression, ctx *hcl.EvalContext) any {
	t.Helper()
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s", diags.Error())
	}
	j, err := stdlib.JSONEncode(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal([]byte(j.AsString()), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// nested returns the nested blocks of type typ, and the content of dynamic "typ" blocks.
func nested(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, n := range b.Body.Blocks {
		switch {
		case n.Type == typ:
			out = append(out, n)
		case n.Type == "dynamic" && n.Labels[0] == typ:
			for _, c := range n.Body.Blocks {
				if c.Type == "content" {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

func TestTerraformModule(t *testing.T) {
	m := loadTerraform(t)

	fn := m.resources["aws_lambda_function.this"]
	if fn == nil {
		t.Fatal("no aws_lambda_function.this")
	}
	if literal(t, attr(t, fn, "runtime")) != "provided.al2023" || literal(t, attr(t, fn, "handler")) != "bootstrap" {
		t.Error("the function must be provided.al2023 with handler bootstrap")
	}

	// Each rule: its pattern, a target invoking the function, a permission scoped to its ARN.
	patterns := map[string]map[string]any{}
	targets, permissions := m.ofType("aws_cloudwatch_event_target"), m.ofType("aws_lambda_permission")
	for key, rule := range m.ofType("aws_cloudwatch_event_rule") {
		name := rule.Labels[1]
		pattern, _ := evaluate(t, attr(t, rule, "event_pattern"), m.tfContext(t, tfVars(nil, nil, nil))).(string)
		var p map[string]any
		if err := json.Unmarshal([]byte(pattern), &p); err != nil {
			t.Fatalf("%s: event_pattern: %v", key, err)
		}
		patterns[strings.Split(name, "_")[0]] = p

		var targeted, permitted int
		for _, tg := range targets {
			if slices.Contains(refs(attr(t, tg, "rule")), key+".name") {
				targeted++
				if !slices.Contains(refs(attr(t, tg, "arn")), "aws_lambda_function.this.arn") {
					t.Errorf("the target of %s does not invoke the function", key)
				}
				if dl := nested(tg, "dead_letter_config"); len(dl) != 1 || !slices.Contains(refs(attr(t, dl[0], "arn")), "aws_sqs_queue.dead_letters.arn") {
					t.Errorf("the target of %s has no dead-letter queue", key)
				}
			}
		}
		for pk, perm := range permissions {
			if slices.Contains(refs(attr(t, perm, "source_arn")), key+".arn") {
				permitted++
				if literal(t, attr(t, perm, "principal")) != "events.amazonaws.com" || literal(t, attr(t, perm, "action")) != "lambda:InvokeFunction" ||
					!slices.Contains(refs(attr(t, perm, "function_name")), "aws_lambda_function.this.function_name") {
					t.Errorf("%s is not EventBridge invoking the function", pk)
				}
			}
		}
		if targeted != 1 || permitted != 1 {
			t.Errorf("%s: %d targets and %d permissions, want one each", key, targeted, permitted)
		}
	}
	for pk, perm := range permissions {
		src, ok := perm.Body.Attributes["source_arn"]
		scoped := false
		if ok {
			for _, r := range refs(src.Expr) {
				scoped = scoped || (strings.HasPrefix(r, "aws_cloudwatch_event_rule.") && strings.HasSuffix(r, ".arn"))
			}
		}
		if !scoped {
			t.Errorf("%s is not scoped to a rule's ARN", pk)
		}
	}
	checkPatterns(t, patterns)

	// The dead-letter queue, for the function's failed events too.
	if m.resources["aws_sqs_queue.dead_letters"] == nil {
		t.Error("no dead-letter queue")
	}
	if dl := nested(fn, "dead_letter_config"); len(dl) != 1 || !slices.Contains(refs(attr(t, dl[0], "target_arn")), "aws_sqs_queue.dead_letters.arn") {
		t.Error("the function's dead_letter_config is not the queue")
	}

	// The alarm on the function's errors.
	alarmed := false
	for _, a := range m.ofType("aws_cloudwatch_metric_alarm") {
		if literal(t, attr(t, a, "namespace")) == "AWS/Lambda" && literal(t, attr(t, a, "metric_name")) == "Errors" &&
			slices.Contains(refs(attr(t, a, "dimensions")), "aws_lambda_function.this.function_name") {
			alarmed = true
		}
	}
	if !alarmed {
		t.Error("no alarm on the function's Errors")
	}

	// VPC settings are inputs.
	vpc := nested(fn, "vpc_config")
	if len(vpc) != 1 || m.variables["subnet_ids"] == nil || m.variables["security_group_ids"] == nil ||
		!slices.Contains(refs(attr(t, vpc[0], "subnet_ids")), "var.subnet_ids") ||
		!slices.Contains(refs(attr(t, vpc[0], "security_group_ids")), "var.security_group_ids") {
		t.Error("vpc_config must come from var.subnet_ids and var.security_group_ids")
	}

	// Least privilege.
	doc := m.data["aws_iam_policy_document.this"]
	if doc == nil {
		t.Fatal("no aws_iam_policy_document.this")
	}
	actions := map[string][]string{}
	var star []string
	for _, st := range nested(doc, "statement") {
		sid, _ := literal(t, attr(t, st, "sid")).(string)
		for _, a := range literal(t, attr(t, st, "actions")).([]any) {
			actions[sid] = append(actions[sid], a.(string))
		}
		res := attr(t, st, "resources")
		if len(res.Variables()) == 0 && slices.Contains(literal(t, res).([]any), any("*")) {
			star = append(star, sid)
		}
	}
	checkActions(t, actions, star)
	checkTerraformScoping(t, m, fn, doc)
	if pol := m.resources["aws_iam_role_policy.this"]; pol == nil || !slices.Contains(refs(attr(t, pol, "policy")), "data.aws_iam_policy_document.this.json") {
		t.Error("the role's policy is not the policy document")
	}
}

// checkTerraformScoping evaluates, for a few deployments, what the module makes of the hook
// names and the groups: the function completes the hooks named (and their events alone reach
// it), and its role may complete lifecycle actions of the groups named, none when none are.
func checkTerraformScoping(t *testing.T, m tfModule, fn, doc *hclsyntax.Block) {
	t.Helper()
	var envHooks hcl.Expression
	for _, env := range nested(fn, "environment") {
		call, ok := attr(t, env, "variables").(*hclsyntax.FunctionCallExpr)
		if !ok || call.Name != "merge" || len(call.Args) != 2 {
			t.Fatal("the function's environment is not merge(var.extra_environment, {...})")
		}
		obj, _ := call.Args[1].(*hclsyntax.ObjectConsExpr)
		if obj == nil {
			t.Fatal("the function's own environment is not an object")
		}
		for _, item := range obj.Items {
			if literal(t, item.KeyExpr) == "TIERLOCK_LIFECYCLE_HOOK_NAMES" {
				envHooks = item.ValueExpr
			}
		}
	}
	if envHooks == nil {
		t.Fatal("the function is not given TIERLOCK_LIFECYCLE_HOOK_NAMES")
	}
	var lifecycleRule *hclsyntax.Block
	for key, rule := range m.ofType("aws_cloudwatch_event_rule") {
		if key == "aws_cloudwatch_event_rule.lifecycle_action" {
			lifecycleRule = rule
		}
	}
	var complete *hclsyntax.Block // the dynamic statement of CompleteLifecycleAction
	for _, b := range doc.Body.Blocks {
		if b.Type == "dynamic" && b.Labels[0] == "statement" {
			for _, c := range b.Body.Blocks {
				if c.Type == "content" && literal(t, attr(t, c, "sid")) == "CompleteLifecycleActions" {
					complete = b
				}
			}
		}
	}
	if lifecycleRule == nil || complete == nil {
		t.Fatal("no lifecycle_action rule, or CompleteLifecycleActions is not a dynamic statement")
	}
	arn := func(g string) any {
		return "arn:aws:autoscaling:eu-west-1:" + account + ":autoScalingGroup:*:autoScalingGroupName/" + g
	}
	for _, d := range []struct {
		name                      string
		extraHooks, hooked, named []string
		env                       string
		hooks, arns               []any // nil arns: no statement
	}{
		{name: "defaults", env: ourHook, hooks: []any{ourHook}},
		{name: "hooked groups", hooked: []string{"es-indexer", "web"}, env: ourHook, hooks: []any{ourHook}, arns: []any{arn("es-indexer"), arn("web")}},
		{name: "groups and hooks by hand", extraHooks: []string{"tierlock-manual", ourHook}, hooked: []string{"web"}, named: []string{"web", "db"},
			env: ourHook + ",tierlock-manual", hooks: []any{ourHook, "tierlock-manual"}, arns: []any{arn("web"), arn("db")}},
	} {
		ctx := m.tfContext(t, tfVars(d.extraHooks, d.hooked, d.named))
		if got := evaluate(t, envHooks, ctx); got != d.env {
			t.Errorf("%s: TIERLOCK_LIFECYCLE_HOOK_NAMES %q, want %q", d.name, got, d.env)
		}
		var p map[string]any
		if err := json.Unmarshal([]byte(evaluate(t, attr(t, lifecycleRule, "event_pattern"), ctx).(string)), &p); err != nil {
			t.Fatal(err)
		}
		if detail, _ := p["detail"].(map[string]any); !equal(detail["LifecycleHookName"], d.hooks) {
			t.Errorf("%s: the lifecycle rule matches hooks %v, want %v", d.name, p["detail"], d.hooks)
		}
		forEach, _ := evaluate(t, complete.Body.Attributes["for_each"].Expr, ctx).([]any)
		content := complete.Body.Blocks[0]
		switch {
		case d.arns == nil && len(forEach) != 0:
			t.Errorf("%s: CompleteLifecycleAction allowed with no group named", d.name)
		case d.arns != nil && len(forEach) != 1:
			t.Errorf("%s: CompleteLifecycleAction not allowed on the groups named", d.name)
		case d.arns != nil && !equal(evaluate(t, attr(t, content, "resources"), ctx), d.arns):
			t.Errorf("%s: CompleteLifecycleAction on %v, want %v", d.name, evaluate(t, attr(t, content, "resources"), ctx), d.arns)
		}
	}
}

// --- CloudFormation ---

// cfnTags are the short forms of the intrinsic functions the template may use.
var cfnTags = map[string]string{
	"!Ref": "Ref", "!GetAtt": "Fn::GetAtt", "!Sub": "Fn::Sub", "!If": "Fn::If", "!Not": "Fn::Not",
	"!Equals": "Fn::Equals", "!Join": "Fn::Join", "!Select": "Fn::Select", "!Split": "Fn::Split",
	"!Or": "Fn::Or", "!Condition": "Condition",
}

// cfnEval evaluates the intrinsic functions the rules and the role use (Ref, Fn::Join,
// Fn::Split, Fn::Sub) as CloudFormation would for the given parameters (CommaDelimitedList
// values as []any), in the fixtures' account; other values are returned as they are.
func cfnEval(t *testing.T, v any, params map[string]any) any {
	t.Helper()
	pseudo := map[string]any{"AWS::AccountId": account, "AWS::Region": "eu-west-1", "AWS::Partition": "aws"}
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		if l, ok := v.([]any); ok {
			var out []any
			for _, x := range l {
				out = append(out, cfnEval(t, x, params))
			}
			return out
		}
		if ok {
			out := map[string]any{}
			for k, x := range m {
				out[k] = cfnEval(t, x, params)
			}
			return out
		}
		return v
	}
	str := func(x any) string {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("%v is not a string", x)
		}
		return s
	}
	for fn, arg := range m {
		switch fn {
		case "Ref":
			name := str(arg)
			if p, ok := pseudo[name]; ok {
				return p
			}
			p, ok := params[name]
			if !ok {
				t.Fatalf("Ref %s: no value given", name)
			}
			return p
		case "Fn::Join":
			a := arg.([]any)
			var parts []string
			for _, x := range cfnEval(t, a[1], params).([]any) {
				parts = append(parts, str(cfnEval(t, x, params)))
			}
			return strings.Join(parts, str(a[0]))
		case "Fn::Split":
			a := arg.([]any)
			var out []any
			for _, x := range strings.Split(str(cfnEval(t, a[1], params)), str(a[0])) {
				out = append(out, x)
			}
			return out
		case "Fn::Sub":
			tpl, vars := arg, map[string]any{}
			if a, ok := arg.([]any); ok {
				tpl = a[0]
				for k, x := range a[1].(map[string]any) {
					vars[k] = cfnEval(t, x, params)
				}
			}
			return subRef.ReplaceAllStringFunc(str(tpl), func(ref string) string {
				name := ref[2 : len(ref)-1]
				for _, src := range []map[string]any{vars, pseudo, params} {
					if x, ok := src[name]; ok {
						return str(x)
					}
				}
				t.Fatalf("Sub: ${%s} has no value", name)
				return ""
			})
		}
		out := map[string]any{}
		out[fn] = cfnEval(t, arg, params)
		return out
	}
	return v
}

// cfnValue turns a YAML node into plain Go values, with short-form intrinsics in their long form
// ({"Ref": X}, {"Fn::GetAtt": [R, A]}, ...), as CloudFormation reads them.
func cfnValue(t *testing.T, n *yaml.Node) any {
	t.Helper()
	var v any
	switch n.Kind {
	case yaml.DocumentNode:
		return cfnValue(t, n.Content[0])
	case yaml.AliasNode:
		return cfnValue(t, n.Alias)
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i < len(n.Content); i += 2 {
			m[n.Content[i].Value] = cfnValue(t, n.Content[i+1])
		}
		v = m
	case yaml.SequenceNode:
		var s []any
		for _, c := range n.Content {
			s = append(s, cfnValue(t, c))
		}
		v = s
	case yaml.ScalarNode:
		v = n.Value
	}
	if !strings.HasPrefix(n.Tag, "!") || strings.HasPrefix(n.Tag, "!!") {
		return v
	}
	fn, ok := cfnTags[n.Tag]
	if !ok {
		t.Fatalf("line %d: unknown tag %s", n.Line, n.Tag)
	}
	if s, ok := v.(string); ok && fn == "Fn::GetAtt" {
		res, att, _ := strings.Cut(s, ".")
		v = []any{res, att}
	}
	return map[string]any{fn: v}
}

func getAtt(resource, attribute string) any {
	return map[string]any{"Fn::GetAtt": []any{resource, attribute}}
}
func ref(name string) any { return map[string]any{"Ref": name} }

func equal(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// walk calls f on every value in v.
func walk(v any, f func(any)) {
	f(v)
	switch v := v.(type) {
	case map[string]any:
		for _, c := range v {
			walk(c, f)
		}
	case []any:
		for _, c := range v {
			walk(c, f)
		}
	}
}

var subRef = regexp.MustCompile(`\$\{([^!}][^}]*)\}`)

func TestCloudFormationTemplate(t *testing.T) {
	b, err := os.ReadFile("cloudformation/tierlock-reaper.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	tpl := cfnValue(t, &root).(map[string]any)
	params, _ := tpl["Parameters"].(map[string]any)
	conditions, _ := tpl["Conditions"].(map[string]any)
	resources := map[string]map[string]any{}
	for name, r := range tpl["Resources"].(map[string]any) {
		resources[name] = r.(map[string]any)
	}
	props := func(name string) map[string]any { p, _ := resources[name]["Properties"].(map[string]any); return p }
	ofType := func(typ string) []string {
		var out []string
		for name, r := range resources {
			if r["Type"] == typ {
				out = append(out, name)
			}
		}
		sort.Strings(out)
		return out
	}

	// Every Ref, GetAtt, Sub variable and condition names something defined.
	defined := func(name string) bool {
		_, p := params[name]
		_, r := resources[name]
		return p || r || strings.HasPrefix(name, "AWS::")
	}
	walk(tpl, func(v any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		if r, ok := m["Ref"].(string); ok && !defined(r) {
			t.Errorf("!Ref %s: not defined", r)
		}
		if g, ok := m["Fn::GetAtt"].([]any); ok && !defined(g[0].(string)) {
			t.Errorf("!GetAtt %v: no such resource", g)
		}
		if s, ok := m["Fn::Sub"].(string); ok {
			for _, match := range subRef.FindAllStringSubmatch(s, -1) {
				if name, _, _ := strings.Cut(match[1], "."); !defined(name) {
					t.Errorf("!Sub %q: ${%s} not defined", s, match[1])
				}
			}
		}
		if c, ok := m["Fn::If"].([]any); ok {
			if _, ok := conditions[c[0].(string)]; !ok {
				t.Errorf("!If %v: no such condition", c[0])
			}
		}
		if c, ok := m["Condition"].(string); ok {
			if _, ok := conditions[c]; !ok {
				t.Errorf("Condition %s: no such condition", c)
			}
		}
	})

	fns := ofType("AWS::Lambda::Function")
	if len(fns) != 1 {
		t.Fatalf("functions: %v", fns)
	}
	fn := props(fns[0])
	if fn["Runtime"] != "provided.al2023" || fn["Handler"] != "bootstrap" {
		t.Error("the function must be provided.al2023 with handler bootstrap")
	}

	patterns := map[string]map[string]any{}
	perms := ofType("AWS::Lambda::Permission")
	for _, rule := range ofType("AWS::Events::Rule") {
		p := props(rule)
		key := map[string]string{"Ec2StateChangeRule": "ec2", "AutoScalingTerminationRule": "autoscaling", "LifecycleActionRule": "lifecycle"}[rule]
		patterns[key] = cfnEval(t, p["EventPattern"], cfnDefaults(t, params)).(map[string]any)
		targets, _ := p["Targets"].([]any)
		if len(targets) != 1 || !equal(targets[0].(map[string]any)["Arn"], getAtt(fns[0], "Arn")) {
			t.Errorf("%s must target the function, once", rule)
		} else if dl, _ := targets[0].(map[string]any)["DeadLetterConfig"].(map[string]any); !equal(dl["Arn"], getAtt("DeadLetterQueue", "Arn")) {
			t.Errorf("the target of %s has no dead-letter queue", rule)
		}
		n := 0
		for _, perm := range perms {
			pp := props(perm)
			if equal(pp["SourceArn"], getAtt(rule, "Arn")) {
				n++
				if pp["Principal"] != "events.amazonaws.com" || pp["Action"] != "lambda:InvokeFunction" || !equal(pp["FunctionName"], ref(fns[0])) {
					t.Errorf("%s is not EventBridge invoking the function", perm)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d permissions scoped to its ARN, want 1", rule, n)
		}
	}
	for _, perm := range perms {
		src, _ := props(perm)["SourceArn"].(map[string]any)
		g, _ := src["Fn::GetAtt"].([]any)
		if len(g) != 2 || resources[g[0].(string)]["Type"] != "AWS::Events::Rule" || g[1] != "Arn" {
			t.Errorf("%s is not scoped to a rule's ARN", perm)
		}
	}
	checkPatterns(t, patterns)

	if q := ofType("AWS::SQS::Queue"); len(q) != 1 || q[0] != "DeadLetterQueue" {
		t.Errorf("queues %v, want DeadLetterQueue", q)
	}
	if dl, _ := fn["DeadLetterConfig"].(map[string]any); !equal(dl["TargetArn"], getAtt("DeadLetterQueue", "Arn")) {
		t.Error("the function's DeadLetterConfig is not the queue")
	}

	alarmed := false
	for _, a := range ofType("AWS::CloudWatch::Alarm") {
		p := props(a)
		if p["Namespace"] == "AWS/Lambda" && p["MetricName"] == "Errors" &&
			equal(p["Dimensions"], []any{map[string]any{"Name": "FunctionName", "Value": ref(fns[0])}}) {
			alarmed = true
		}
	}
	if !alarmed {
		t.Error("no alarm on the function's Errors")
	}

	// VPC settings are parameters.
	vpc := map[string]any{"SubnetIds": ref("SubnetIds"), "SecurityGroupIds": ref("SecurityGroupIds")}
	if !equal(fn["VpcConfig"], map[string]any{"Fn::If": []any{"InVpc", vpc, ref("AWS::NoValue")}}) {
		t.Errorf("VpcConfig %v, want the SubnetIds and SecurityGroupIds parameters", fn["VpcConfig"])
	}

	// Least privilege.
	if !equal(fn["Role"], getAtt("Role", "Arn")) {
		t.Fatal("the function's role is not Role")
	}
	actions := map[string][]string{}
	var star []string
	for _, pol := range props("Role")["Policies"].([]any) {
		doc := pol.(map[string]any)["PolicyDocument"].(map[string]any)
		for _, st := range doc["Statement"].([]any) {
			s := st.(map[string]any)
			if c, ok := s["Fn::If"].([]any); ok {
				s = c[1].(map[string]any) // the statement when the condition holds; else none
			}
			sid := s["Sid"].(string)
			if s["Effect"] != "Allow" {
				t.Errorf("statement %s: Effect %v", sid, s["Effect"])
			}
			switch a := s["Action"].(type) {
			case string:
				actions[sid] = append(actions[sid], a)
			case []any:
				for _, x := range a {
					actions[sid] = append(actions[sid], x.(string))
				}
			}
			if s["Resource"] == "*" {
				star = append(star, sid)
			}
		}
	}
	checkActions(t, actions, star)
	checkCloudFormationScoping(t, params, props)
}

// cfnDefaults are the template's parameters with their defaults, lists split as
// CloudFormation splits a CommaDelimitedList.
func cfnDefaults(t *testing.T, params map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for name, p := range params {
		p := p.(map[string]any)
		def, ok := p["Default"].(string)
		if !ok {
			def = "required-" + name
		}
		if p["Type"] == "CommaDelimitedList" {
			var l []any
			for _, x := range strings.Split(def, ",") {
				l = append(l, x)
			}
			out[name] = l
			continue
		}
		out[name] = def
	}
	return out
}

// checkCloudFormationScoping evaluates, for a few deployments, the hooks the function
// completes (and the only ones whose events reach it), and the groups its role may complete
// lifecycle actions of: those named, none when none are.
func checkCloudFormationScoping(t *testing.T, params map[string]any, props func(string) map[string]any) {
	t.Helper()
	if _, ok := params["AutoScalingGroupNamePattern"]; ok {
		t.Error("AutoScalingGroupNamePattern is back: a pattern defaulting to every group")
	}
	fn := props("Function")
	env := fn["Environment"].(map[string]any)["Variables"].(map[string]any)
	var complete map[string]any // the conditional statement of CompleteLifecycleAction
	for _, pol := range props("Role")["Policies"].([]any) {
		for _, st := range pol.(map[string]any)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
			if c, ok := st.(map[string]any)["Fn::If"].([]any); ok && c[1].(map[string]any)["Sid"] == "CompleteLifecycleActions" {
				complete = st.(map[string]any)
			}
		}
	}
	if complete == nil {
		t.Fatal("CompleteLifecycleActions is not a conditional statement")
	}
	cond := complete["Fn::If"].([]any)
	if cond[0] != "HasAutoScalingGroups" || !equal(cond[2], ref("AWS::NoValue")) {
		t.Errorf("CompleteLifecycleActions: %v, want it only with HasAutoScalingGroups", cond)
	}
	lifecycleRule := props("LifecycleActionRule")["EventPattern"]
	arn := "arn:aws:autoscaling:eu-west-1:" + account + ":autoScalingGroup:*:autoScalingGroupName/"
	wild := "arn:*:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/"
	for _, d := range []struct {
		name, hooked, groups, extraHooks string
		env                              string
		hooks, arns                      []any
	}{
		{name: "defaults", env: ourHook + ",", hooks: []any{ourHook, ""}},
		{name: "one hooked group", hooked: "es-indexer", env: ourHook + ",", hooks: []any{ourHook, ""}, arns: []any{arn + "es-indexer", wild}},
		{name: "groups and hooks by hand", hooked: "web", groups: "db,cache", extraHooks: "tierlock-manual", env: ourHook + ",tierlock-manual",
			hooks: []any{ourHook, "tierlock-manual"}, arns: []any{arn + "web", wild + "db", wild + "cache"}},
		{name: "groups by hand only", groups: "db", env: ourHook + ",", hooks: []any{ourHook, ""}, arns: []any{arn, wild + "db"}},
	} {
		p := cfnDefaults(t, params)
		p["LifecycleHookAutoScalingGroup"] = d.hooked
		split := func(s string) []any {
			var l []any
			for _, x := range strings.Split(s, ",") {
				l = append(l, x)
			}
			return l
		}
		p["AutoScalingGroupNames"], p["ExtraLifecycleHookNames"] = split(d.groups), split(d.extraHooks)
		if got := cfnEval(t, env["TIERLOCK_LIFECYCLE_HOOK_NAMES"], p); got != d.env {
			t.Errorf("%s: TIERLOCK_LIFECYCLE_HOOK_NAMES %q, want %q", d.name, got, d.env)
		}
		pattern := cfnEval(t, lifecycleRule, p).(map[string]any)
		if !equal(pattern["detail"].(map[string]any)["LifecycleHookName"], d.hooks) {
			t.Errorf("%s: the lifecycle rule matches hooks %v, want %v", d.name, pattern["detail"], d.hooks)
		}
		// HasAutoScalingGroups, as the template defines it.
		has := d.hooked != "" || d.groups != ""
		if has != (d.arns != nil) {
			t.Fatalf("%s: the case is wrong", d.name)
		}
		if has {
			// An empty name in the list makes an ARN of no group: harmless, and not "*".
			if got := cfnEval(t, cond[1].(map[string]any)["Resource"], p); !equal(got, d.arns) {
				t.Errorf("%s: CompleteLifecycleAction on %v, want %v", d.name, got, d.arns)
			}
		}
	}
}
