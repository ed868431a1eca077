/* sh_blocks.h -- a cache of small freed memory blocks, by size class, in
** front of malloc. Depends on nothing else in core/; knows nothing about
** Lua (bindings/main.c's allocator for the Lua state goes through it).
**
** A Lua state allocates and frees many small blocks (tables, their parts,
** strings, closures), and its collector frees them in bursts, which glibc's
** per-size caches do not hold: most then go through the general heap. Here
** a block of up to SH_BLOCKS_MAX bytes is made with its size rounded up to
** a multiple of 16 (its class), and a freed one is kept on its class's list
** for the next allocation of that class, up to a bound on the bytes kept;
** past it, and for larger blocks, malloc, realloc and free do the work.
**
** One cache belongs to one thread (it has no lock). Built with
** AddressSanitizer, nothing is kept (every block goes to malloc and free),
** so that the sanitizer sees each block's own life. */
#ifndef SH_BLOCKS_H
#define SH_BLOCKS_H

#include <stddef.h>

#define SH_BLOCKS_MAX 1024          /* the largest block that is cached */
#define SH_BLOCKS_STEP 16           /* the classes' sizes: 16, 32, ... */
#define SH_BLOCKS_CLASSES (SH_BLOCKS_MAX / SH_BLOCKS_STEP)
#define SH_BLOCKS_KEEP (4u << 20)   /* the most bytes kept free by default */

typedef struct sh_blocks {
  void *head[SH_BLOCKS_CLASSES + 1]; /* a list of free blocks by class (1..) */
  size_t kept;                     /* bytes on the lists */
  size_t keep;                     /* the most they may hold; 0: keep none */
} sh_blocks;

/* An empty cache that keeps at most 'keep' bytes of freed blocks. */
void sh_blocks_init(sh_blocks *b, size_t keep);

/* The allocator's one operation, as lua_Alloc has it: 'p' NULL allocates
** 'nsize' bytes; 'nsize' 0 frees 'p' (of 'osize' bytes); else resizes 'p'
** from 'osize' to 'nsize' bytes, its contents kept up to the smaller.
** 'osize' must be the size the block was allocated or last resized with.
** Returns the block, NULL for a free, or NULL when memory ran out (then 'p'
** is unchanged). */
void *sh_blocks_realloc(sh_blocks *b, void *p, size_t osize, size_t nsize);

/* Free every kept block (at the end, or to give memory back). */
void sh_blocks_drain(sh_blocks *b);

#endif
