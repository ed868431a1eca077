/* sh_crypto.c -- see sh_crypto.h. No library: SHA-1 (FIPS 180-4) and
** base64 (RFC 4648) are a few dozen lines each, and random bytes come from
** the kernel (getrandom(2)), so that plain WebSocket needs no OpenSSL and
** the process maps libcrypto only when TLS is first used (sh_tls_load.c). */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "sh_crypto.h"

/* ---------------- SHA-1 ---------------- */

static uint32_t rol32 (uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static uint32_t load_be32 (const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void store_be32 (unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

/* One 64-byte block into the state h[5]. */
static void sha1_block (uint32_t h[5], const unsigned char *blk) {
  uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f, k, t;
  int i;
  for (i = 0; i < 16; i++) w[i] = load_be32(blk + 4 * i);
  for (i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  for (i = 0; i < 80; i++) {
    if (i < 20)      { f = (b & c) | (~b & d);          k = 0x5a827999u; }
    else if (i < 40) { f = b ^ c ^ d;                   k = 0x6ed9eba1u; }
    else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdcu; }
    else             { f = b ^ c ^ d;                   k = 0xca62c1d6u; }
    t = rol32(a, 5) + f + e + k + w[i];
    e = d; d = c; c = rol32(b, 30); b = a; a = t;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

int sh_sha1 (const void *data, size_t n, unsigned char out[SH_SHA1_LEN]) {
  const unsigned char *p = data;
  uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u, 0xc3d2e1f0u};
  unsigned char tail[128];
  uint64_t bits = (uint64_t)n * 8;
  size_t whole = n / 64 * 64, rest = n - whole, tlen, i;
  for (i = 0; i < whole; i += 64) sha1_block(h, p + i);
  /* the rest, a 1 bit, zeros, and the length in bits: one block or two */
  memset(tail, 0, sizeof tail);
  memcpy(tail, p + whole, rest);
  tail[rest] = 0x80;
  tlen = rest + 1 + 8 <= 64 ? 64 : 128;
  for (i = 0; i < 8; i++) tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
  for (i = 0; i < tlen; i += 64) sha1_block(h, tail + i);
  for (i = 0; i < 5; i++) store_be32(out + 4 * i, h[i]);
  return 0;
}

/* ---------------- base64 ---------------- */

static const char b64_alphabet[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t sh_base64_len (size_t n) {
  return (n + 2) / 3 * 4;
}

size_t sh_base64_encode (const void *in, size_t n, char *out) {
  const unsigned char *s = in;
  size_t i, o = 0;
  for (i = 0; n - i >= 3; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    out[o++] = b64_alphabet[v >> 18];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = b64_alphabet[(v >> 6) & 63];
    out[o++] = b64_alphabet[v & 63];
  }
  if (n - i > 0) {                         /* one or two bytes left: pad */
    uint32_t v = (uint32_t)s[i] << 16 | (n - i == 2 ? (uint32_t)s[i + 1] << 8 : 0);
    out[o++] = b64_alphabet[v >> 18];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = n - i == 2 ? b64_alphabet[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

static int b64_value (unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

long sh_base64_decode (const char *in, size_t n, unsigned char *out) {
  const unsigned char *s = (const unsigned char *)in;
  size_t i, pad = 0, body, o = 0;
  uint32_t v = 0;
  int bits = 0;
  if (n % 4 != 0) return -1;
  if (n == 0) return 0;
  if (s[n - 1] == '=') pad = s[n - 2] == '=' ? 2 : 1;
  body = n - pad;
  for (i = 0; i < body; i++) {
    int d = b64_value(s[i]);
    if (d < 0) return -1;                  /* '=' inside, white space, ... */
    v = (v << 6) | (uint32_t)d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(v >> bits);
      v &= (1u << bits) - 1;
    }
  }
  if (v != 0) return -1;                   /* pad bits that are not zero */
  return (long)o;
}

/* ---------------- random bytes ---------------- */

int sh_random (void *out, size_t n) {
  unsigned char *p = out;
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(p + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  return 0;
}

void sh_xor_mask (unsigned char *buf, size_t n, const unsigned char key[4], size_t offset) {
  unsigned char k[4];
  size_t i = 0;
  uint64_t k8;
  for (i = 0; i < 4; i++) k[i] = key[(offset + i) & 3];
  i = 0;
  /* byte by byte until buf + i is 8-aligned, then 8 bytes at a time */
  while (i < n && ((uintptr_t)(buf + i) & 7) != 0) { buf[i] ^= k[i & 3]; i++; }
  if (n - i >= 8) {
    unsigned char rot[8];
    size_t j;
    for (j = 0; j < 8; j++) rot[j] = k[(i + j) & 3];
    memcpy(&k8, rot, 8);
    for (; n - i >= 8; i += 8) {
      uint64_t w;
      memcpy(&w, buf + i, 8);
      w ^= k8;
      memcpy(buf + i, &w, 8);
    }
  }
  for (; i < n; i++) buf[i] ^= k[i & 3];
}

int sh_utf8_valid (const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;     /* the second byte's range */
    if (c < 0x80) {
      /* ASCII: skip 8 at a time while no high bit is set */
      while (n - i >= 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080)) break;
        i += 8;
      }
      if (i < n && s[i] < 0x80) i++;
      continue;
    }
    if (c < 0xc2) return 0;                  /* continuation byte, or overlong C0/C1 */
    if (c < 0xe0) need = 1;
    else if (c < 0xf0) {
      need = 2;
      if (c == 0xe0) lo = 0xa0;              /* overlong */
      if (c == 0xed) hi = 0x9f;              /* surrogates */
    } else if (c < 0xf5) {
      need = 3;
      if (c == 0xf0) lo = 0x90;              /* overlong */
      if (c == 0xf4) hi = 0x8f;              /* past U+10FFFF */
    } else return 0;
    if (n - i <= need) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    if (need >= 2 && (s[i + 2] & 0xc0) != 0x80) return 0;
    if (need == 3 && (s[i + 3] & 0xc0) != 0x80) return 0;
    i += need + 1;
  }
  return 1;
}
