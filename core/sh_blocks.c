/* sh_blocks.c -- a cache of small freed blocks by size class (see
** sh_blocks.h). A kept block holds the next one's address in its first
** bytes; every class's size is at least a pointer's. */
#include <stdlib.h>
#include <string.h>

#include "sh_blocks.h"

#if defined(__SANITIZE_ADDRESS__)
#define KEEP_NONE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEP_NONE 1
#endif
#endif
#ifndef KEEP_NONE
#define KEEP_NONE 0
#endif

/* The class of a block of n bytes (1..SH_BLOCKS_CLASSES), 0: not cached. */
static size_t class_of (size_t n) {
  return n <= SH_BLOCKS_MAX ? (n + SH_BLOCKS_STEP - 1) / SH_BLOCKS_STEP : 0;
}

void sh_blocks_init (sh_blocks *b, size_t keep) {
  memset(b, 0, sizeof *b);
  b->keep = KEEP_NONE ? 0 : keep;
}

static void *take (sh_blocks *b, size_t n) {
  size_t c = class_of(n);
  void *p;
  if (c == 0) return malloc(n);
  if ((p = b->head[c]) != NULL) {
    memcpy(&b->head[c], p, sizeof p);
    b->kept -= c * SH_BLOCKS_STEP;
    return p;
  }
  return malloc(c * SH_BLOCKS_STEP);
}

static void give (sh_blocks *b, void *p, size_t n) {
  size_t c = class_of(n);
  if (c == 0 || b->kept + c * SH_BLOCKS_STEP > b->keep) {
    free(p);
    return;
  }
  memcpy(p, &b->head[c], sizeof p);
  b->head[c] = p;
  b->kept += c * SH_BLOCKS_STEP;
}

void *sh_blocks_realloc (sh_blocks *b, void *p, size_t osize, size_t nsize) {
  size_t oc, nc;
  void *q;
  if (p == NULL) return nsize > 0 ? take(b, nsize) : NULL;
  if (nsize == 0) {
    give(b, p, osize);
    return NULL;
  }
  oc = class_of(osize);
  nc = class_of(nsize);
  if (oc == 0 && nc == 0) return realloc(p, nsize);
  if (oc == nc) return p;                  /* the block already has the room */
  if ((q = take(b, nsize)) == NULL) return NULL;
  memcpy(q, p, osize < nsize ? osize : nsize);
  give(b, p, osize);
  return q;
}

void sh_blocks_drain (sh_blocks *b) {
  size_t c;
  for (c = 1; c <= SH_BLOCKS_CLASSES; c++) {
    void *p = b->head[c], *next;
    while (p != NULL) {
      memcpy(&next, p, sizeof next);
      free(p);
      p = next;
    }
    b->head[c] = NULL;
  }
  b->kept = 0;
}
