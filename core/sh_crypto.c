/* sh_crypto.c -- see sh_crypto.h. */
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "sh_crypto.h"

int sh_sha1 (const void *data, size_t n, unsigned char out[SH_SHA1_LEN]) {
  unsigned int len = 0;
  if (EVP_Digest(data, n, out, &len, EVP_sha1(), NULL) != 1 || len != SH_SHA1_LEN) return -1;
  return 0;
}

size_t sh_base64_len (size_t n) {
  return (n + 2) / 3 * 4;
}

size_t sh_base64_encode (const void *in, size_t n, char *out) {
  size_t done = 0, total = 0;
  /* EVP_EncodeBlock takes an int: feed it pieces (a multiple of 3 bytes). */
  while (n - done > 0) {
    size_t piece = n - done > 3u * (1u << 28) ? 3u * (1u << 28) : n - done;
    total += (size_t)EVP_EncodeBlock((unsigned char *)out + total,
                                     (const unsigned char *)in + done, (int)piece);
    done += piece;
  }
  out[total] = '\0';
  return total;
}

static int b64_value (unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Checked here, decoded by OpenSSL: EVP_DecodeBlock skips white space,
** accepts what is not canonical and counts padding as zero bytes. */
long sh_base64_decode (const char *in, size_t n, unsigned char *out) {
  const unsigned char *s = (const unsigned char *)in;
  size_t i, pad = 0, done = 0;
  long total = 0;
  if (n % 4 != 0) return -1;
  if (n == 0) return 0;
  if (s[n - 1] == '=') pad = s[n - 2] == '=' ? 2 : 1;
  for (i = 0; i < n - pad; i++)
    if (b64_value(s[i]) < 0) return -1;
  if (pad == 2 && (b64_value(s[n - 3]) & 0x0f) != 0) return -1;
  if (pad == 1 && (b64_value(s[n - 2]) & 0x03) != 0) return -1;
  while (done < n) {                      /* pieces: EVP_DecodeBlock takes an int */
    size_t piece = n - done > 4u * (1u << 28) ? 4u * (1u << 28) : n - done;
    int got = EVP_DecodeBlock(out + total, s + done, (int)piece);
    if (got < 0) return -1;
    total += got;
    done += piece;
  }
  return total - (long)pad;
}

int sh_random (void *out, size_t n) {
  return RAND_bytes((unsigned char *)out, (int)n) == 1 ? 0 : -1;
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
