package validate

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// memRoot is where the tree is copied in the in-memory file system.
const memRoot = "/k8s"

// Tree is a copy of deploy/k8s in memory: a rendering can enable components
// in an overlay the way an operator does (editing its components list)
// without touching the files on disk.
type Tree struct {
	files map[string][]byte // path relative to deploy/k8s -> content
}

// LoadTree reads every file under dir except the Go code and this module.
func LoadTree(dir string) (*Tree, error) {
	t := &Tree{files: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return fmt.Errorf("relative path of %s: %w", path, err)
		}
		if d.IsDir() {
			if rel == "validate" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(rel, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		t.files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	return t, nil
}

// Dirs lists the directories (relative) that hold a kustomization.yaml,
// sorted.
func (t *Tree) Dirs() []string {
	var out []string
	for p := range t.files {
		if filepath.Base(p) == "kustomization.yaml" {
			out = append(out, filepath.Dir(p))
		}
	}
	sort.Strings(out)
	return out
}

// Kustomization parses the kustomization.yaml of dir.
func (t *Tree) Kustomization(dir string) (types.Kustomization, error) {
	var k types.Kustomization
	b, ok := t.files[filepath.ToSlash(filepath.Join(dir, "kustomization.yaml"))]
	if !ok {
		return k, fmt.Errorf("%s: no kustomization.yaml", dir)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return k, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	return k, nil
}

// Render runs kustomize on dir with components appended to its components
// list (paths relative to dir, as an operator writes them).
func (t *Tree) Render(dir string, components ...string) (resmap.ResMap, error) {
	fsys := filesys.MakeFsInMemory()
	for p, b := range t.files {
		if err := fsys.WriteFile(filepath.Join(memRoot, p), b); err != nil {
			return nil, fmt.Errorf("copy %s: %w", p, err)
		}
	}
	if len(components) > 0 {
		k, err := t.Kustomization(dir)
		if err != nil {
			return nil, err
		}
		k.Components = append(k.Components, components...)
		b, err := yaml.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("%s: marshal kustomization: %w", dir, err)
		}
		if err := fsys.WriteFile(filepath.Join(memRoot, dir, "kustomization.yaml"), b); err != nil {
			return nil, fmt.Errorf("%s: write kustomization: %w", dir, err)
		}
	}
	opts := krusty.MakeDefaultOptions()
	m, err := krusty.MakeKustomizer(opts).Run(fsys, filepath.Join(memRoot, dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s %v: %w", dir, components, err)
	}
	return m, nil
}

// Subsets returns every subset of items, the empty one first.
func Subsets(items []string) [][]string {
	out := [][]string{{}}
	for _, it := range items {
		n := len(out)
		for i := 0; i < n; i++ {
			s := append(append([]string{}, out[i]...), it)
			out = append(out, s)
		}
	}
	return out
}
