package aggregator

import (
	"container/list"
	"sync"
)

// roomCache is a bounded LRU of room records in front of rtc_rooms. An entry
// remembers the KV revision it was read or written at, so the next write is
// a revision-checked Update without a Get. Entries carry their partition:
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
	rec       *RoomRecord
	rev       uint64
}

func newRoomCache(max int) *roomCache {
	return &roomCache{max: max, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *roomCache) get(key string) (*RoomRecord, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, 0, false
	}
	c.ll.MoveToFront(el)
	e := el.Value.(*cacheEntry)
	return e.rec, e.rev, true
}

func (c *roomCache) put(key string, partition int, rec *RoomRecord, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.rec, e.rev, e.partition = rec, rev, partition
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, partition: partition, rec: rec, rev: rev})
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
