/* Example: retrieval-augmented generation with REFRAG chunk placeholders
 * through the Loom C API (loom.h). The artifact must come from
 * loomc --format=refrag (it carries the chunk encoder).
 *
 *   rag ARTIFACT CONTEXT QUESTION CHUNK_SIZE EXPAND_FRACTION STEPS [LOGITS]
 *     Tokenizes CONTEXT and QUESTION (no BOS), runs the REFRAG prefill
 *     (loom_rag_prefill: chunks of CHUNK_SIZE, the policy expands
 *     EXPAND_FRACTION of them), then decodes greedily up to STEPS tokens,
 *     printing the question and the generated text as loom-run does.
 *   rag ARTIFACT --encode CORPUS CHUNK_SIZE STORE
 *     Encodes CORPUS (one passage a line) into the chunk store STORE once.
 *   rag ARTIFACT --store STORE PASSAGES QUESTION EXPAND_FRACTION STEPS [LOGITS]
 *     The same generation with the context taken from the store: PASSAGES
 *     is a comma-separated list of 0-based passage indices.
 *
 * LOGITS, when given, receives the prefill's last-position logits as raw
 * floats. stderr gets one line saying what the prefill fed. Errors are one
 * line on stderr and exit 1. Written in C89.
 */
#include "loom/loom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check(loom_status status, const char *what) {
  if (status != LOOM_OK) {
    fprintf(stderr, "rag: %s: %s (%s)\n", what, loom_last_error(),
            loom_status_name(status));
    return 0;
  }
  return 1;
}

static int usage(void) {
  fprintf(stderr, "usage: rag ARTIFACT CONTEXT QUESTION CHUNK_SIZE "
                  "EXPAND_FRACTION STEPS [LOGITS] | rag ARTIFACT --encode "
                  "CORPUS CHUNK_SIZE STORE | rag ARTIFACT --store STORE "
                  "PASSAGES QUESTION EXPAND_FRACTION STEPS [LOGITS]\n");
  return 1;
}

/* A whole decimal number >= 0 (strtol rules), or -1. */
static long parse_count(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  return (*s && !*end && v >= 0) ? v : -1;
}

/* Tokenizes `text` without BOS into a malloc'ed array (NULL on failure). */
static int *tokenize(const loom_model *model, const char *text, size_t *n) {
  int *ids;
  loom_status st = loom_tokenize(model, text, 0, NULL, 0, n);
  if (st == LOOM_OK)
    return (int *)malloc(1); /* no ids: an empty text */
  if (st != LOOM_ERROR_BUFFER_TOO_SMALL) {
    check(st, "tokenize");
    return NULL;
  }
  ids = (int *)malloc(*n * sizeof *ids);
  if (!ids) {
    fprintf(stderr, "rag: out of memory\n");
    return NULL;
  }
  if (!check(loom_tokenize(model, text, 0, ids, *n, n), "tokenize")) {
    free(ids);
    return NULL;
  }
  return ids;
}

/* Prints the bytes of `token` following `prev`. */
static int print_token(const loom_model *model, int prev, int token) {
  char text[256];
  size_t len;
  if (!check(loom_token_to_text(model, prev, token, text, sizeof text, &len),
             "decode"))
    return 0;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return 1;
}

static int write_logits(const char *path, const float *logits, long vocab) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(logits, sizeof *logits, (size_t)vocab, f) != (size_t)vocab) {
    fprintf(stderr, "rag: cannot write '%s'\n", path);
    if (f)
      fclose(f);
    return 0;
  }
  return fclose(f) == 0;
}

/* Parses "0,3,7" into a malloc'ed array. */
static size_t *parse_passages(const char *list, size_t *n) {
  size_t cap = strlen(list) / 2 + 1, count = 0;
  size_t *out = (size_t *)malloc(cap * sizeof *out);
  const char *p = list;
  if (!out)
    return NULL;
  for (;;) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 0 || (*end && *end != ',') || count == cap) {
      free(out);
      return NULL;
    }
    out[count++] = (size_t)v;
    if (!*end)
      break;
    p = end + 1;
  }
  *n = count;
  return out;
}

int main(int argc, char **argv) {
  loom_model *model = NULL;
  loom_session *session = NULL;
  loom_sampler *sampler = NULL;
  loom_chunk_store *store = NULL;
  loom_model_info info;
  loom_rag_stats stats;
  int *context = NULL, *question = NULL;
  size_t *passages = NULL;
  size_t n_context = 0, n_question = 0, n_passages = 0, i;
  const char *question_text, *logits_path;
  const float *logits;
  double fraction;
  long chunk_size = 0, steps, generated;
  int from_store, prev, next, ok = 0;

  if (argc < 2)
    return usage();
  if (argc == 6 && strcmp(argv[2], "--encode") == 0) {
    /* Encode a corpus once; queries then read the store. */
    chunk_size = parse_count(argv[4]);
    if (chunk_size < 1)
      return usage();
    if (!check(loom_model_load(argv[1], &model), "load")) {
      loom_model_free(model);
      return 1;
    }
    ok = check(loom_encode_corpus(model, argv[3], argv[5], (size_t)chunk_size,
                                  0),
               "encode");
    loom_model_free(model);
    return ok ? 0 : 1;
  }
  from_store = argc > 2 && strcmp(argv[2], "--store") == 0;
  if (from_store ? (argc != 8 && argc != 9) : (argc != 7 && argc != 8))
    return usage();
  if (from_store) {
    passages = parse_passages(argv[4], &n_passages);
    question_text = argv[5];
    fraction = atof(argv[6]);
    steps = parse_count(argv[7]);
    logits_path = argc == 9 ? argv[8] : NULL;
    if (!passages || steps < 0) {
      free(passages);
      return usage();
    }
  } else {
    question_text = argv[3];
    chunk_size = parse_count(argv[4]);
    fraction = atof(argv[5]);
    steps = parse_count(argv[6]);
    logits_path = argc == 8 ? argv[7] : NULL;
    if (chunk_size < 1 || steps < 0) {
      fprintf(stderr, "rag: CHUNK_SIZE must be a whole number >= 1 and STEPS "
                      ">= 0\n");
      return 1;
    }
  }

  if (!check(loom_model_load(argv[1], &model), "load") ||
      !check(loom_model_get_info(model, &info), "model info"))
    goto done;
  if (!loom_model_has_chunk_encoder(model)) {
    fprintf(stderr, "rag: '%s' has no chunk encoder (compile it with loomc "
                    "--format=refrag)\n", argv[1]);
    goto done;
  }
  if (!(question = tokenize(model, question_text, &n_question)))
    goto done;
  if (!check(loom_session_create(model, 0, &session), "session") ||
      !check(loom_sampler_create(model, 0.0f, 1.0f, 1, &sampler), "sampler"))
    goto done;

  /* The prefill: the context compressed into chunk placeholders, then the
   * question. A negative fraction would mean "use an explicit list". */
  if (from_store) {
    if (!check(loom_chunk_store_open(argv[3], &store), "open store") ||
        !check(loom_rag_prefill_from_store(session, store, passages,
                                           n_passages, question, n_question,
                                           (float)fraction, NULL, 0, &logits,
                                           &stats),
               "prefill"))
      goto done;
  } else {
    if (!(context = tokenize(model, argv[2], &n_context)) ||
        !check(loom_rag_prefill(session, context, n_context, question,
                                n_question, (size_t)chunk_size,
                                (float)fraction, NULL, 0, &logits, &stats),
               "prefill"))
      goto done;
  }
  fprintf(stderr, "rag: %lu chunks of %lu, %lu expanded -> %lu decoder "
                  "positions\n",
          (unsigned long)stats.n_chunks, (unsigned long)stats.chunk_size,
          (unsigned long)stats.n_expanded, (unsigned long)stats.n_positions);
  if (logits_path && !write_logits(logits_path, logits, info.vocab_size))
    goto done;

  /* Echo the question as a text of its own (its first token as after BOS). */
  for (i = 0; i < n_question; ++i)
    if (!print_token(model, i ? question[i - 1] : info.bos_id, question[i]))
      goto done;

  /* Generation: ordinary tokens after the prefill. The token before the
   * first one printed is the question's last (any non-BOS id otherwise). */
  prev = n_question ? question[n_question - 1] : (info.bos_id == 0 ? 1 : 0);
  for (generated = 0; generated < steps; ++generated) {
    if (!check(loom_sampler_sample(sampler, logits, &next), "sample"))
      goto done;
    if (loom_token_ends_generation(model, next))
      break;
    if (!print_token(model, prev, next))
      goto done;
    if (generated + 1 == steps ||
        loom_session_position(session) >= info.context_length)
      break;
    if (!check(loom_session_forward(session, &next, 1, &logits), "forward"))
      goto done;
    prev = next;
  }
  printf("\n");
  ok = 1;

done:
  free(context);
  free(question);
  free(passages);
  loom_chunk_store_free(store);
  loom_sampler_free(sampler);
  loom_session_free(session);
  loom_model_free(model);
  return ok ? 0 : 1;
}
