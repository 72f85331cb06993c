package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds the size of a configuration file. The largest valid
// configuration, 512 VIPs of 4096 backends each written out in block style
// with IPv6 addresses and a weight, is 154 MiB; a larger file is another
// file (a log, an image) given by mistake, or one that something keeps
// writing to, and reading it whole would take the daemon's memory.
const MaxFileSize = 256 << 20

// readFile reads a config file; a missing, empty or oversized file is an
// error that says so and points at the annotated example.
func readFile(path, example string) ([]byte, error) {
	data, err := readConfig(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w; pass the path of a config file (%s is an annotated example)", path, err, example)
	}
	return data, nil
}

// rereadFile reads the config file of a running daemon for a reload,
// which cannot name another file: the advice is to put this one right.
func rereadFile(path string) ([]byte, error) {
	data, err := readConfig(path, MaxFileSize)
	if err != nil {
		fix := "restore " + path
		if errors.Is(err, fs.ErrPermission) {
			fix = "fix the permissions of " + path
		}
		return nil, fmt.Errorf("read config %s: %w; a reload reads the file switchyard run was started with: %s, then reload again", path, err, fix)
	}
	return data, nil
}

// readConfig reads the file at path, of at most limit bytes. It reads no
// more than limit+1 of them: a file that grows while it is read, or a
// device or pipe whose size stat does not tell, is stopped there too.
func readConfig(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tooLarge := fmt.Errorf("%w: more than %d MiB, and no valid configuration is (512 VIPs of 4096 backends each, written out, are about 154 MiB)", ErrTooLarge, limit>>20)
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > limit {
		return nil, tooLarge
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, tooLarge
	}
	return data, nil
}

// parseInto decodes the YAML document in data over out (a pointer to a
// struct already holding the static defaults), then calls finish, which
// applies the derived defaults and validates; finish can ask whether the
// file set a field (to a value other than null that decoded: one that did
// not is reported already, and the field keeps its default, whose
// consequences would be noise). Decoding and validation
// problems are reported together, each with name, line and field path.
func parseInto(data []byte, name string, kind, other *fileKind, out any, finish func(set func(path string) bool) problems) error {
	example := kind.example
	root, err := parseDocument(data, name, example)
	if err != nil {
		return err
	}
	if err := other.claims(root, kind, name); err != nil {
		return err
	}
	d := &decoder{lines: map[string]int{"": root.Line}, set: map[string]bool{}, failed: map[string]bool{}, active: map[*yaml.Node]bool{}}
	d.decode(root, reflect.ValueOf(out).Elem(), "")
	all := d.errs
	// Over an alias budget the rest was not decoded: validating it is
	// noise.
	if d.aliases <= maxAliases && d.aliasValues <= maxAliasValues {
		for _, p := range finish(func(path string) bool { return d.set[path] && !d.failedUnder(path) }) {
			// A field that failed to decode kept its default; checking
			// that default would only add noise next to the real problem.
			if !d.failedUnder(p.Path) {
				all = append(all, p)
			}
		}
	}
	for _, p := range all {
		p.File = name
		if p.Line == 0 {
			p.Line = d.line(p.Path)
		}
	}
	return join(all)
}

// fileKind is one of the two configuration files, the balancer's and the
// agent's, told apart by the top-level fields only it has.
type fileKind struct {
	whose    string   // "the balancer's"
	commands string   // the commands that read it, and what each does with it
	example  string   // its annotated example
	only     []string // top-level fields the other kind has not
}

var (
	balancerFile = &fileKind{"the balancer's",
		"switchyard run runs it, switchyard check checks it, switchyard remove removes what it set up",
		exampleConfig, []string{"datapath", "encap", "nexthop"}}
	agentFile = &fileKind{"the agent's",
		"switchyard agent runs it, switchyard check --agent checks it, switchyard remove --agent removes what it set up",
		exampleAgentConfig, []string{"interface", "encap_addresses", "gue_port", "pin_dir"}}
)

// claims returns an error if root, given to the command of kind, has a
// top-level field only k has and none only kind has: the file is k's. One
// line saying so, rather than one for each field the command does not know,
// is what `switchyard agent --config switchyard.yaml` needs.
func (k *fileKind) claims(root *yaml.Node, kind *fileKind, name string) error {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	var theirs *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		key := root.Content[i]
		if slices.Contains(kind.only, key.Value) {
			return nil
		}
		if theirs == nil && slices.Contains(k.only, key.Value) {
			theirs = key
		}
	}
	if theirs == nil {
		return nil
	}
	// Said to run, a reload, check and remove (or the agent's): the
	// advice names the commands of each kind, not one of them.
	return join([]*FieldError{{File: name, Line: theirs.Line, Path: theirs.Value, otherKind: true, Msg: fmt.Sprintf(
		"this is a field of %s configuration, not of %s: the file is %s (%s); %s commands take %s configuration (%s is an annotated example)",
		k.whose, kind.whose, k.whose, k.commands, kind.whose, kind.whose, kind.example)}})
}

var yamlLineErr = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument returns the root node of the only document in data.
func parseDocument(data []byte, name, example string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w; write the configuration in it (%s is an annotated example)", name, ErrEmpty, example)
		}
		return nil, syntaxError(name, err)
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null") {
		return nil, fmt.Errorf("%s: %w; write the configuration in it (%s is an annotated example)", name, ErrEmpty, example)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(name, err)
	default:
		return nil, join([]*FieldError{{File: name, Line: extra.Line, Msg: "a second YAML document starts here; " +
			"put the whole configuration in one document (remove the ---)"}})
	}
	return doc.Content[0], nil
}

// syntaxError turns a yaml.v3 parse error ("yaml: line 3: …") into a
// FieldError so that it reads like every other problem.
func syntaxError(name string, err error) error {
	msg := err.Error()
	fe := &FieldError{File: name}
	if m := yamlLineErr.FindStringSubmatch(msg); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	// yaml.v3 quotes what it could not take whole (unknown anchor 'NAME'
	// referenced): cut as every value an error quotes.
	msg = yamlQuoted.ReplaceAllStringFunc(msg, func(q string) string {
		return fmt.Sprintf("'%s'", userValue(q[1:len(q)-1]))
	})
	fe.Msg = "not valid YAML: " + msg + "; check the indentation and quoting around this line"
	return join([]*FieldError{fe})
}

// yamlQuoted is a text a yaml.v3 error quotes.
var yamlQuoted = regexp.MustCompile(`'[^']*'`)

// decoder walks a yaml.Node tree into Go values, field by field.
//
// yaml.v3 can reject unknown fields (Decoder.KnownFields) but stops at the
// first one, and neither it nor Node.Decode can tell which line a field path
// such as vips[2].health.timeout came from. Walking the tree ourselves gives
// both: every unknown or mistyped field is reported, and lines maps each
// field path to its line for the validation errors that come later.
type decoder struct {
	lines  map[string]int  // field path → line of its key or list item
	set    map[string]bool // field paths given a non-null value
	errs   problems
	failed map[string]bool // paths that failed to decode

	active      map[*yaml.Node]bool // nodes being decoded, to catch an alias inside its own anchor
	aliases     int                 // aliases followed so far
	inAlias     int                 // aliases being decoded (one inside another counts again)
	aliasValues int                 // values decoded where an alias stands for them
}

// wholeNumber is an integer written in decimal, of any size: the only
// form of integer accepted.
var wholeNumber = regexp.MustCompile(`^[-+]?[0-9]+$`)

// leadingZero is a decimal integer written with a leading zero, such as
// 080 or 010.
var leadingZero = regexp.MustCompile(`^[-+]?0[0-9]+$`)

// withoutLeadingZeros writes a number that matches leadingZero plainly:
// 080 as 80, -00 as 0.
func withoutLeadingZeros(s string) string {
	sign := ""
	if s[0] == '-' || s[0] == '+' {
		sign, s = s[:1], s[1:]
	}
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "0"
	}
	if sign == "+" {
		sign = ""
	}
	return sign + s
}

// defaulter is implemented by list elements whose fields have defaults:
// each new element starts from them before the YAML is decoded over it, so
// that a field left out keeps its default and an explicit 0 stays 0 (and is
// then rejected with a useful message rather than silently replaced).
type defaulter interface{ setDefaults() }

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
	d.failed[path] = true
}

// failedUnder reports whether path, or a field that contains it, failed to
// decode. It looks up path and each of its parents rather than comparing
// path with every failed one: a file can have tens of thousands of
// problems, each asked about.
func (d *decoder) failedUnder(path string) bool {
	for {
		if d.failed[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parent(path)
	}
}

// line returns the line of path, or of its nearest ancestor present in the
// file (a required field that is missing is reported where its parent is).
func (d *decoder) line(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parent(path)
	}
}

// parent strips the last ".field" or "[i]" from path.
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func fieldPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// keyName is a mapping key as an error's path shows it: as written if it
// is a plain word, else quoted, and cut as userValue cuts it. An unknown
// key is the one text of the file an error showed as it was: a tab or
// newline in it broke the line of the error, an escape sequence rewrote
// the user's terminal. (No field's name is long enough to be cut.)
func keyName(k string) string {
	for _, r := range k {
		if !unicode.IsPrint(r) || r == ' ' {
			return fmt.Sprintf("%q", userValue(k))
		}
	}
	return fmt.Sprint(userValue(k))
}

// maxAliases bounds how many times aliases (*name) are followed, so that
// a file of nested aliases cannot make decoding take exponential time.
const maxAliases = 10000

// maxAliasValues bounds how many values aliases stand for, counted as they
// are decoded: within maxAliases, an anchored list of a few thousand
// backends aliased in each of thousands of VIPs would make a file of a few
// hundred kilobytes decode into gigabytes (a "billion laughs" that needs no
// nesting). A million values decode in about a second and 250 MB, as a
// file of some ten megabytes written out would; a health check, or a list
// of a hundred backends, shared by 512 VIPs stays far below.
const maxAliasValues = 1_000_000

// resolve follows aliases to the node they name. It returns nil, having
// reported why, if the alias budget is spent or the alias refers to a value
// that contains it.
func (d *decoder) resolve(n *yaml.Node, path string) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		d.aliases++
		if d.aliases > maxAliases {
			if d.aliases == maxAliases+1 {
				d.fail(n, path, "more than %d aliases followed; write the values out", maxAliases)
			}
			return nil
		}
		n = n.Alias
	}
	if d.active[n] {
		d.fail(n, path, "the alias refers to a value that contains it; write the value out")
		return nil
	}
	return n
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.aliases > maxAliases || d.aliasValues > maxAliasValues {
		return // over budget: reported once, decode no more
	}
	alias := n.Kind == yaml.AliasNode
	if n = d.resolve(n, path); n == nil {
		return
	}
	if alias {
		d.inAlias++
		defer func() { d.inAlias-- }()
	}
	if d.inAlias > 0 {
		if d.aliasValues++; d.aliasValues > maxAliasValues {
			d.fail(n, path, "the aliases (*name) of this file stand for more than %d values; write the values out, or alias smaller ones", maxAliasValues)
			return
		}
	}
	d.active[n] = true
	defer delete(d.active, n)
	// A local tag (!foo) names a type of another program's: YAML's own
	// (!!str, !!int, ...) are checked where their values are read.
	if n.Tag != "" && !strings.HasPrefix(n.ShortTag(), "!!") {
		d.fail(n, path, "the YAML tag %s means nothing here; remove it", userValue(n.Tag))
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// "port:" with nothing after it means "not set": keep the default.
		return
	}
	d.set[path] = true
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a single value, got %s", describe(n))
			return
		}
		if err := u.UnmarshalYAML(n); errors.Is(err, errDurationTooLong) {
			d.fail(n, path, "%s", tooLongDuration(path, n.Value))
		} else if err != nil {
			d.fail(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, got %s; write one item per line starting with \"- \", or [a, b]", describe(n))
			return
		}
		if len(n.Content) == 0 {
			v.Set(reflect.Zero(v.Type())) // nil, not empty: "vips: []" equals no vips
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			e := s.Index(i)
			if df, ok := e.Addr().Interface().(defaulter); ok {
				df.setDefaults()
			}
			d.decode(item, e, p)
		}
		v.Set(s)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	fields := yamlFields(v.Type())
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping with the fields %s, got %s", strings.Join(fields.names, ", "), describe(n))
		return
	}
	// Merge keys ("<<: *defaults") first, so that the keys written out in
	// this mapping win, as in YAML's merge semantics.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() != "!!merge" {
			continue
		}
		if val.Kind == yaml.SequenceNode {
			for _, m := range val.Content {
				d.decode(m, v, path)
			}
		} else {
			d.decode(val, v, path)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a field name must be a plain word, got %s", describe(k))
			continue
		}
		p := fieldPath(path, keyName(k.Value))
		if first, dup := seen[k.Value]; dup {
			d.fail(k, p, "set twice (first on line %d); keep one", first)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields.index[k.Value]
		if !ok {
			d.fail(k, p, "unknown field; %s", suggest(k.Value, fields.names))
			continue
		}
		d.lines[p] = k.Line
		d.decode(val, v.Field(idx), p)
	}
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected a single value, got %s", describe(n))
		return
	}
	switch v.Kind() {
	case reflect.Int:
		if n.ShortTag() == "!!str" { // port: "80"
			if i, err := strconv.Atoi(n.Value); err == nil {
				v.SetInt(int64(i))
				return
			}
		}
		if leadingZero.MatchString(n.Value) {
			// YAML reads 010 as octal 8 and 080 as a float: neither is
			// the decimal number meant.
			d.fail(n, path, "%s has a leading zero, which YAML may read as octal; write %s", userValue(n.Value), userValue(withoutLeadingZeros(n.Value)))
			return
		}
		if _, err := strconv.Atoi(n.Value); errors.Is(err, strconv.ErrRange) && wholeNumber.MatchString(n.Value) {
			// Digits, too many for an int (YAML reads them as a float).
			d.fail(n, path, "%s is out of range; use %s", userValue(n.Value), intRange(path))
			return
		}
		if n.ShortTag() != "!!int" {
			d.fail(n, path, "%q is not a whole number; write digits only, e.g. 80", userValue(n.Value))
			return
		}
		if !wholeNumber.MatchString(n.Value) {
			// YAML also reads 0x50, 0o120, 0b101 and 1_000 as integers;
			// everything else (status, logs, errors) prints the decimal
			// number, which the file should show as written.
			var i int
			if err := n.Decode(&i); err != nil {
				d.fail(n, path, "%s is not written in decimal; write the number in decimal digits", userValue(n.Value))
			} else {
				d.fail(n, path, "%s is not written in decimal (YAML reads it as %d); write the number in decimal: %d", userValue(n.Value), i, i)
			}
			return
		}
	case reflect.Bool:
		if n.ShortTag() != "!!bool" {
			d.fail(n, path, "%q is not true or false; write true or false", userValue(n.Value))
			return
		}
	case reflect.String:
		// Anything written as a scalar is fine as a string: "name: 1" is
		// the name "1". Node.Decode would turn !!binary into bytes.
		v.SetString(n.Value)
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.fail(n, path, "%q cannot be used here: %v", userValue(n.Value), err)
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", userValue(n.Value))
	default:
		return "something else"
	}
}

type structFields struct {
	index map[string]int // yaml name → field index
	names []string       // yaml names in declaration order
}

// yamlFields lists the fields of a struct type by their yaml tag. Every
// config struct field has an explicit tag; untagged fields are not
// configurable.
func yamlFields(t reflect.Type) structFields {
	fs := structFields{index: map[string]int{}}
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		fs.index[name] = i
		fs.names = append(fs.names, name)
	}
	return fs
}

// suggest names the closest valid field if the unknown one looks like a
// typo, and lists the valid fields either way.
func suggest(got string, valid []string) string {
	best, bestDist := "", len(got)/3+2
	for _, v := range valid {
		if dist := editDistance(strings.ToLower(got), v); dist < bestDist {
			best, bestDist = v, dist
		}
	}
	list := strings.Join(valid, ", ")
	if best != "" {
		return fmt.Sprintf("did you mean %s? (valid here: %s)", best, list)
	}
	return "valid here: " + list
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
