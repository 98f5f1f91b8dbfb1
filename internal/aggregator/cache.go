package aggregator

import (
	"container/list"
	"sync"

	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
)

// roomCache is a bounded LRU of rooms in front of rtc_rooms. A room
// remembers the KV revisions it was read or written at, so the next commit
// is revision-checked without a read. Entries carry their partition:
// acquiring a partition drops its entries, because another worker may have
// written those rooms meanwhile.
type roomCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

type cacheEntry struct {
	key       string
	partition int
	room      *roomstore.Room
}

func newRoomCache(max int) *roomCache {
	return &roomCache{max: max, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *roomCache) get(key string) (*roomstore.Room, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*cacheEntry).room, true
}

func (c *roomCache) put(key string, partition int, rm *roomstore.Room) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.room, e.partition = rm, partition
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, partition: partition, room: rm})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

func (c *roomCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
}

func (c *roomCache) dropPartition(p int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*cacheEntry); e.partition == p {
			c.ll.Remove(el)
			delete(c.items, e.key)
		}
		el = next
	}
}

func (c *roomCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
