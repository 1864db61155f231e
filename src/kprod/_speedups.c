/*
 * kprod._speedups: the per-record fast path in C (optional; setup.py builds it when it can).
 *
 * Two callable types. PlainAppender belongs to the pure core (time comes in as an argument, no
 * lock, no I/O): it is kprod._core.appender's try_append_plain. FastSend belongs to the sync
 * facade: it is Producer.send's first branch (it reads the wall clock and takes the engine's lock,
 * as the Python method does) and is described with its code below.
 *
 * PlainAppender does what the Python closure built by
 * kprod._core.appender._plain_appender_py does, step for step and with the same refusals: place
 * one record of raw bytes without headers into the open batch of its partition and account for
 * it (the batch's size, count and max timestamp, the accumulator's used bytes and full batches,
 * the sticky partitioner's produced bytes), or return None and change nothing, so that the
 * caller takes the general path. The Python closure stays the reference: tests run both and
 * compare the bytes and the placement record by record (tests/test_io_append_path.py,
 * tests/test_speedups.py).
 *
 * Why C: this function runs once per record under the producer's lock and the GIL; in Python it
 * is about forty bytecode-level operations (~1 us), the largest part of a record's CPU cost.
 * Here it reads and writes the batch's, the topic state's and the partitioner's __slots__
 * directly at their offsets (looked up once from the member descriptors, and only used on
 * objects of exactly those types), and encodes the record's varints itself.
 *
 * It never reads from a socket and never allocates per record beyond the batch's bytearray
 * growth and the ints it stores. Anything unexpected (a type that is not the one measured,
 * an unset slot, a value out of range) returns None before any state changes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* The plain path's bounds (kprod._core.appender): record count and timestamp delta stay within
 * the 2-byte varints of the Python table, so both implementations refuse the same records. */
#define MAX_COUNT 8191
#define MIN_DELTA (-8192)
#define MAX_DELTA 8191

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *acc;            /* RecordAccumulator (slots used_bytes, full_batches) */
    PyObject *fast_appenders; /* dict: topic -> _TopicAppender */
    PyObject *switch_sticky;  /* callable(topic, appender) */
    PyObject *txn;            /* None or the transaction manager (attribute state) */
    PyObject *in_transaction; /* TxnState.IN_TRANSACTION */
    PyTypeObject *batch_type;
    PyTypeObject *appender_type;
    PyTypeObject *queue_type;
    PyTypeObject *sticky_type;
    Py_ssize_t off_acc_used_bytes, off_acc_full_batches;
    Py_ssize_t off_accepting, off_size_bytes, off_record_count, off_base_ts, off_max_ts, off_buffer;
    Py_ssize_t off_app_count, off_app_sticky, off_app_sticky_batch, off_app_queues;
    Py_ssize_t off_queue_batches;
    Py_ssize_t off_sticky_batch_size, off_sticky_produced;
    long long max_bytes, memory_limit, batch_limit, batch_size;
    int ignore_keys;
} PlainAppender;

static PyObject *str_state;

/* A small non-negative or negative int read from a slot; 0 on success, -1 when absent or not an
 * exact int in range (no exception left set). */
static int
read_ll(PyObject *v, long long *out)
{
    if (v == NULL || !PyLong_CheckExact(v)) {
        return -1;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    *out = x;
    return 0;
}

static int
set_slot_ll(PyObject *obj, Py_ssize_t off, long long x)
{
    PyObject *nv = PyLong_FromLongLong(x);
    if (nv == NULL) {
        return -1;
    }
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = nv;
    Py_XDECREF(old);
    return 0;
}

/* Length of the zigzag varint of n. */
static inline Py_ssize_t
varint_len(long long n)
{
    unsigned long long z = ((unsigned long long)n << 1) ^ (unsigned long long)(n >> 63);
    Py_ssize_t len = 1;
    while (z >= 0x80) {
        z >>= 7;
        len++;
    }
    return len;
}

static inline char *
put_varint(char *p, long long n)
{
    unsigned long long z = ((unsigned long long)n << 1) ^ (unsigned long long)(n >> 63);
    while (z >= 0x80) {
        *p++ = (char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *p++ = (char)z;
    return p;
}

/* Kafka's murmur2 (Utils.murmur2: seed 0x9747b28c, m 0x5bd1e995, r 24, 4-byte little-endian blocks,
 * then a 1-3 byte tail), as an unsigned 32-bit int; kprod._core.murmur2 has the same in Python. */
static uint32_t
murmur2_u32(const unsigned char *data, Py_ssize_t length)
{
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    Py_ssize_t blocks = length >> 2;
    for (Py_ssize_t i = 0; i < blocks; i++) {
        const unsigned char *b = data + 4 * i;
        uint32_t k = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = data + 4 * blocks;
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static PyObject *
py_murmur2_u32(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "murmur2_u32() takes bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    return PyLong_FromUnsignedLong(murmur2_u32((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}

/* The last batch of queue number `index` of the appender (new reference), Py_None when the queue
 * is empty, or NULL with no exception for "not this way". */
static PyObject *
last_batch_of(PlainAppender *self, PyObject *appender, long long index)
{
    PyObject *queues = SLOT(appender, self->off_app_queues);
    if (queues == NULL || !PyList_CheckExact(queues) || index < 0 || index >= PyList_GET_SIZE(queues)) {
        return NULL;
    }
    PyObject *queue = PyList_GET_ITEM(queues, index);
    if (Py_TYPE(queue) != self->queue_type) {
        return NULL;
    }
    PyObject *batches = SLOT(queue, self->off_queue_batches);
    if (batches == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Size(batches);
    if (n < 0) {
        PyErr_Clear();
        return NULL;
    }
    if (n == 0) {
        Py_RETURN_NONE;
    }
    PyObject *batch = PySequence_GetItem(batches, n - 1);
    if (batch == NULL) {
        PyErr_Clear();
    }
    return batch;
}

#define REFUSE() do { result = Py_None; Py_INCREF(result); goto done; } while (0)

/* A record's key or value for plain_append: its bytes, or size -1 for null. */
typedef struct {
    const char *data;
    Py_ssize_t size;
} Blob;

static PyObject *
plain_append(PlainAppender *self, PyObject *topic, PyObject *partition, long long ts, Blob key, Blob value,
             Blob headers)
{
    PyObject *result = NULL;
    PyObject *appender = NULL;
    PyObject *batch = NULL;
    PyObject *sticky = NULL;
    long long value_size = value.size, key_size = key.size, used, count_partitions;

    if (!PyUnicode_CheckExact(topic)) {
        Py_RETURN_NONE;
    }
    appender = PyDict_GetItemWithError(self->fast_appenders, topic);
    if (appender == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_INCREF(appender);
    if (Py_TYPE(appender) != self->appender_type) {
        REFUSE();
    }
    if (self->txn != Py_None) {
        PyObject *state = PyObject_GetAttr(self->txn, str_state);
        if (state == NULL) {
            goto done;
        }
        int in_txn = state == self->in_transaction;
        Py_DECREF(state);
        if (!in_txn) {
            REFUSE();  /* the general path raises what the transaction's state says */
        }
    }
    /* headers.size: the encoded header section (its count included), 0 without headers; the plain
     * bounds count one byte for an empty section, so the bound stays an upper bound. */
    long long data_size = key_size + value_size + headers.size;
    if (data_size > self->max_bytes) {
        REFUSE();
    }
    if (read_ll(SLOT(self->acc, self->off_acc_used_bytes), &used) < 0) {
        PyErr_SetString(PyExc_TypeError, "kprod fast append: the accumulator's used_bytes is not an int");
        goto done;
    }
    if (used + data_size > self->memory_limit) {
        REFUSE();
    }
    if (read_ll(SLOT(appender, self->off_app_count), &count_partitions) < 0 || count_partitions <= 0) {
        REFUSE();
    }
    if (partition == Py_None) {
        if (key_size < 0 || self->ignore_keys) {
            batch = SLOT(appender, self->off_app_sticky_batch);
            sticky = SLOT(appender, self->off_app_sticky);
            if (batch == NULL || sticky == NULL || Py_TYPE(sticky) != self->sticky_type) {
                batch = NULL;
                sticky = NULL;
                REFUSE();
            }
            Py_INCREF(batch);
            Py_INCREF(sticky);
        }
        else {
            /* partition_for_key's hash, computed here (the Python closure calls positive_hash) */
            long long hash = (long long)(murmur2_u32((const unsigned char *)key.data, key.size) & 0x7fffffffu);
            batch = last_batch_of(self, appender, hash % count_partitions);
            if (batch == NULL) {
                REFUSE();
            }
        }
    }
    else if (PyLong_CheckExact(partition)) {
        long long p;
        if (read_ll(partition, &p) < 0 || p < 0 || p >= count_partitions) {
            REFUSE();
        }
        batch = last_batch_of(self, appender, p);
        if (batch == NULL) {
            REFUSE();
        }
    }
    else {
        REFUSE();
    }
    if (batch == Py_None || !PyObject_TypeCheck(batch, self->batch_type)) {
        REFUSE();
    }
    if (SLOT(batch, self->off_accepting) != Py_True) {
        REFUSE();
    }
    long long before, count, base_ts, max_ts;
    if (read_ll(SLOT(batch, self->off_size_bytes), &before) < 0 ||
        read_ll(SLOT(batch, self->off_record_count), &count) < 0 ||
        read_ll(SLOT(batch, self->off_base_ts), &base_ts) < 0 ||
        read_ll(SLOT(batch, self->off_max_ts), &max_ts) < 0) {
        REFUSE();
    }
    if (before + data_size > self->batch_limit) {
        REFUSE();
    }
    /* Both within 2^62 of zero (a timestamp from send() is, always), so the difference cannot
     * overflow; anything farther is out of the delta's range anyway. */
    if (ts < -(1LL << 62) || ts > (1LL << 62) || base_ts < -(1LL << 62) || base_ts > (1LL << 62)) {
        REFUSE();
    }
    long long delta = ts - base_ts;
    if (count > MAX_COUNT || delta < MIN_DELTA || delta > MAX_DELTA) {
        REFUSE();
    }
    PyObject *buffer = SLOT(batch, self->off_buffer);
    if (buffer == NULL || !PyByteArray_CheckExact(buffer)) {
        REFUSE();
    }

    /* RecordBatchBuilder.append: length, attributes, timestamp delta, offset delta, key, value,
     * then the header count and headers (encoded by the caller) or a count of 0. */
    Py_ssize_t value_bytes = value_size < 0 ? 0 : (Py_ssize_t)value_size;
    Py_ssize_t key_bytes = key_size < 0 ? 0 : (Py_ssize_t)key_size;
    Py_ssize_t body = 1 + varint_len(delta) + varint_len(count) + varint_len(key_size) + key_bytes +
                      varint_len(value_size) + value_bytes + (headers.size ? headers.size : 1);
    Py_ssize_t added = varint_len(body) + body;
    Py_ssize_t old_len = PyByteArray_GET_SIZE(buffer);
    Py_ssize_t new_len = old_len + added;
    Py_ssize_t alloc = ((PyByteArrayObject *)buffer)->ob_alloc;
    if (new_len + 1 > alloc) {
        /* Grow by half, and from three quarters of batch.size straight to batch.size (a batch never
         * grows past it, but for a lone larger record): bytearray alone grows by an eighth, some
         * sixty reallocations and copies of the whole buffer per 128 KiB batch; by half about
         * twenty. Each step is more than an eighth, so bytearray allocates exactly what is asked
         * (it adds an eighth of its own only to smaller steps). Not doubling: a batch that stops
         * filling keeps its spare capacity until it completes, outside buffer.memory's count.
         * Resizing up and then down to the length needed keeps the capacity: bytearray shrinks in
         * place by less than half. */
        Py_ssize_t cap = (Py_ssize_t)self->batch_size;
        Py_ssize_t reserve = alloc + alloc / 2;
        if (reserve > cap - cap / 4) {
            reserve = cap;
        }
        if (reserve > new_len) {
            if (PyByteArray_Resize(buffer, reserve) < 0) {
                goto done;  /* MemoryError, or BufferError while the buffer is exported: as `+=` */
            }
        }
    }
    if (PyByteArray_Resize(buffer, new_len) < 0) {
        goto done;  /* MemoryError, or BufferError while the buffer is exported: as `+=` would */
    }
    char *p = PyByteArray_AS_STRING(buffer) + old_len;
    p = put_varint(p, body);
    *p++ = 0;  /* attributes */
    p = put_varint(p, delta);
    p = put_varint(p, count);
    p = put_varint(p, key_size);
    if (key_bytes) {
        memcpy(p, key.data, key_bytes);
        p += key_bytes;
    }
    p = put_varint(p, value_size);
    if (value_bytes) {
        memcpy(p, value.data, value_bytes);
        p += value_bytes;
    }
    if (headers.size) {
        memcpy(p, headers.data, headers.size);
        p += headers.size;
    }
    else {
        *p++ = 0;  /* header count */
    }

    long long size = old_len + added;
    long long grown = size - before;
    if (set_slot_ll(batch, self->off_size_bytes, size) < 0 ||
        set_slot_ll(batch, self->off_record_count, count + 1) < 0) {
        goto done;
    }
    if (ts > max_ts && set_slot_ll(batch, self->off_max_ts, ts) < 0) {
        goto done;
    }
    if (set_slot_ll(self->acc, self->off_acc_used_bytes, used + grown) < 0) {
        goto done;
    }
    int accepting = 1;
    if (size >= self->batch_size) {
        accepting = 0;
        PyObject *old = SLOT(batch, self->off_accepting);
        Py_INCREF(Py_False);
        SLOT(batch, self->off_accepting) = Py_False;
        Py_XDECREF(old);
        long long full;
        if (read_ll(SLOT(self->acc, self->off_acc_full_batches), &full) < 0) {
            PyErr_SetString(PyExc_TypeError, "kprod fast append: the accumulator's full_batches is not an int");
            goto done;
        }
        if (set_slot_ll(self->acc, self->off_acc_full_batches, full + 1) < 0) {
            goto done;
        }
    }
    if (sticky != NULL) {
        /* StickyPartitioner.on_append, inlined as in the Python closure. */
        long long produced, sticky_size;
        if (read_ll(SLOT(sticky, self->off_sticky_produced), &produced) < 0 ||
            read_ll(SLOT(sticky, self->off_sticky_batch_size), &sticky_size) < 0) {
            PyErr_SetString(PyExc_TypeError, "kprod fast append: the sticky partitioner's counters are not ints");
            goto done;
        }
        produced += grown;
        if (set_slot_ll(sticky, self->off_sticky_produced, produced) < 0) {
            goto done;
        }
        if (produced >= sticky_size && (produced >= 2 * sticky_size || !accepting)) {
            PyObject *args[2] = {topic, appender};
            PyObject *r = PyObject_Vectorcall(self->switch_sticky, args, 2, NULL);
            if (r == NULL) {
                goto done;
            }
            Py_DECREF(r);
        }
    }
    result = batch;
    batch = NULL;
done:
    Py_XDECREF(batch);
    Py_XDECREF(sticky);
    Py_XDECREF(appender);
    return result;
}

/* bytes -> its buffer, None -> null; 0 for anything else. */
static inline int
blob_of_bytes(PyObject *obj, Blob *out)
{
    if (PyBytes_CheckExact(obj)) {
        out->data = PyBytes_AS_STRING(obj);
        out->size = PyBytes_GET_SIZE(obj);
        return 1;
    }
    if (obj == Py_None) {
        out->data = NULL;
        out->size = -1;
        return 1;
    }
    return 0;
}

static PyObject *
PlainAppender_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 5 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "try_append_plain(topic, partition, timestamp_ms, key, value) takes 5 positional arguments");
        return NULL;
    }
    /* Only raw bytes or None, and an int timestamp: anything else is the general path's (None). */
    Blob key, value;
    long long ts;
    if (!blob_of_bytes(args[3], &key) || !blob_of_bytes(args[4], &value) || read_ll(args[2], &ts) < 0) {
        Py_RETURN_NONE;
    }
    Blob no_headers = {NULL, 0};
    return plain_append((PlainAppender *)callable, args[0], args[1], ts, key, value, no_headers);
}

static int
PlainAppender_traverse(PlainAppender *self, visitproc visit, void *arg)
{
    Py_VISIT(self->acc);
    Py_VISIT(self->fast_appenders);
    Py_VISIT(self->switch_sticky);
    Py_VISIT(self->txn);
    Py_VISIT(self->in_transaction);
    Py_VISIT(self->batch_type);
    Py_VISIT(self->appender_type);
    Py_VISIT(self->queue_type);
    Py_VISIT(self->sticky_type);
    return 0;
}

static int
PlainAppender_clear(PlainAppender *self)
{
    Py_CLEAR(self->acc);
    Py_CLEAR(self->fast_appenders);
    Py_CLEAR(self->switch_sticky);
    Py_CLEAR(self->txn);
    Py_CLEAR(self->in_transaction);
    Py_CLEAR(self->batch_type);
    Py_CLEAR(self->appender_type);
    Py_CLEAR(self->queue_type);
    Py_CLEAR(self->sticky_type);
    return 0;
}

static void
PlainAppender_dealloc(PlainAppender *self)
{
    PyObject_GC_UnTrack(self);
    PlainAppender_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PlainAppender_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kprod._speedups.PlainAppender",
    .tp_basicsize = sizeof(PlainAppender),
    .tp_dealloc = (destructor)PlainAppender_dealloc,
    .tp_vectorcall_offset = offsetof(PlainAppender, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "try_append_plain(topic, partition, timestamp_ms, key, value) -> ProducerBatch | None",
    .tp_traverse = (traverseproc)PlainAppender_traverse,
    .tp_clear = (inquiry)PlainAppender_clear,
};

/* ---------------------------------------------------------------------------------------------
 * FastSend: Producer.send's common case (kprod/sync.py), for producers with the default
 * serializers. send(topic, value=None, key=None, *, partition=None, timestamp=None, headers=None,
 * on_delivery=None): a record record_args_take accepts goes to PlainAppender under the engine's
 * lock and gets its RecordFuture here; every other record, and every one the fast path refuses,
 * goes to `fallback` (Producer._send, the general path) with the same arguments, and any call
 * this one does not parse to `fallback_general` (the Python Producer.send).
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PlainAppender *appender;
    PyObject *acquire;       /* the engine lock's bound acquire() and release() */
    PyObject *release;
    PyObject *after_append_locked;  /* engine.after_append_locked(batch) -> AfterAppend */
    PyObject *after_append;  /* Producer._after_append(action) */
    PyObject *fallback;      /* Producer._send(topic, value, key, partition, timestamp, headers, on_delivery) */
    PyObject *fallback_general;  /* Producer.send in Python, bound: any call this one does not parse */
    PyTypeObject *future_type;
    Py_ssize_t off_future_batch, off_future_index, off_future_timestamp;
    Py_ssize_t off_callbacks; /* ProducerBatch.callbacks */
} FastSend;

static Py_ssize_t slot_offset(PyTypeObject *type, const char *name);

static PyObject *str_topic, *str_value, *str_key, *str_partition, *str_timestamp, *str_headers,
    *str_on_delivery;

static inline void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;  /* steals the reference */
    Py_XDECREF(old);
}

/* A key or value as the default serializer makes it: bytes, str as UTF-8, None as null; 0 for
 * anything else, or for a str that is not valid UTF-8 (no exception left set). The UTF-8 of a str
 * that is not ASCII stays cached in the str, as CPython's own PyUnicode_AsUTF8 does. */
static inline int
blob_of_serialized(PyObject *obj, Blob *out)
{
    if (blob_of_bytes(obj, out)) {
        return 1;
    }
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t size;
        const char *data = PyUnicode_AsUTF8AndSize(obj, &size);
        if (data == NULL) {
            PyErr_Clear();
            return 0;
        }
        out->data = data;
        out->size = size;
        return 1;
    }
    return 0;
}

/* One header's name or value as normalize_headers makes it: str as UTF-8, bytes as is, None (values
 * only) as null. 0 for anything else or a str that is not UTF-8 (no exception left set). */
static inline int
header_blob(PyObject *obj, int is_name, Blob *out)
{
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t size;
        const char *data = PyUnicode_AsUTF8AndSize(obj, &size);
        if (data == NULL) {
            PyErr_Clear();
            return 0;
        }
        out->data = data;
        out->size = size;
        return 1;
    }
    if (is_name) {
        return 0;  /* names are str */
    }
    return blob_of_bytes(obj, out);
}

#define MAX_FAST_HEADERS 64

/* Encode `headers` (a list or tuple of (name, value) tuples, or a dict) as a record's header section:
 * varint count, then each name and value with its varint length (-1: a null value). 1 and a new
 * bytes object in *out (NULL when there are no headers); 0 for a form or a header the general path
 * must see (no exception set); -1 on an error (MemoryError). */
static int
encode_headers(PyObject *headers, PyObject **out)
{
    Blob names[MAX_FAST_HEADERS], values[MAX_FAST_HEADERS];
    Py_ssize_t n = 0;
    *out = NULL;
    if (PyDict_CheckExact(headers)) {
        if (PyDict_GET_SIZE(headers) > MAX_FAST_HEADERS) {
            return 0;
        }
        Py_ssize_t pos = 0;
        PyObject *name, *value;
        while (PyDict_Next(headers, &pos, &name, &value)) {
            if (!header_blob(name, 1, &names[n]) || !header_blob(value, 0, &values[n])) {
                return 0;
            }
            n++;
        }
    }
    else if (PyList_CheckExact(headers) || PyTuple_CheckExact(headers)) {
        Py_ssize_t count = PySequence_Fast_GET_SIZE(headers);
        if (count > MAX_FAST_HEADERS) {
            return 0;
        }
        PyObject **items = PySequence_Fast_ITEMS(headers);
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *pair = items[i];
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !header_blob(PyTuple_GET_ITEM(pair, 0), 1, &names[n]) ||
                !header_blob(PyTuple_GET_ITEM(pair, 1), 0, &values[n])) {
                return 0;
            }
            n++;
        }
    }
    else {
        return 0;
    }
    if (n == 0) {
        return 1;  /* `if headers` is false for an empty list or dict: no headers */
    }
    Py_ssize_t size = varint_len(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        size += varint_len(names[i].size) + names[i].size + varint_len(values[i].size) +
                (values[i].size > 0 ? values[i].size : 0);
    }
    PyObject *section = PyBytes_FromStringAndSize(NULL, size);
    if (section == NULL) {
        return -1;
    }
    char *p = PyBytes_AS_STRING(section);
    p = put_varint(p, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        p = put_varint(p, names[i].size);
        memcpy(p, names[i].data, names[i].size);
        p += names[i].size;
        p = put_varint(p, values[i].size);
        if (values[i].size > 0) {
            memcpy(p, values[i].data, values[i].size);
            p += values[i].size;
        }
    }
    *out = section;
    return 1;
}

/* A record's own arguments as the fast paths take them (FastSend, FastEnqueue). */
typedef struct {
    Blob key, value, headers;
    PyObject *header_section; /* owns headers' bytes, or NULL */
    long long ts;
    PyObject *ts_obj;         /* the timestamp as an int object (new reference) */
} RecordArgs;

/* Take value, key, timestamp and headers as the general path would, for the cases the fast paths
 * handle: the default serializers' bytes and str (a str that is not UTF-8 is the serializer's to
 * refuse), None or a non-negative int timestamp (else check_timestamp's), headers in their common
 * forms (else normalize_headers'). 1: taken, release with record_args_clear; 0: the general path's
 * (nothing held, no exception); -1: an error (MemoryError). */
static int
record_args_take(PyObject *value, PyObject *key, PyObject *timestamp, PyObject *headers, RecordArgs *out)
{
    out->header_section = NULL;
    out->ts_obj = NULL;
    out->headers.data = NULL;
    out->headers.size = 0;
    if (!blob_of_serialized(key, &out->key) || !blob_of_serialized(value, &out->value)) {
        return 0;
    }
    if (timestamp == Py_None) {
        struct timespec now;
        if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
            return 0;
        }
        out->ts = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    }
    else if (!(PyLong_CheckExact(timestamp) && read_ll(timestamp, &out->ts) == 0 && out->ts >= 0)) {
        return 0;
    }
    if (headers != Py_None) {
        int rc = encode_headers(headers, &out->header_section);
        if (rc <= 0) {
            return rc;
        }
        if (out->header_section != NULL) {
            out->headers.data = PyBytes_AS_STRING(out->header_section);
            out->headers.size = PyBytes_GET_SIZE(out->header_section);
        }
    }
    out->ts_obj = timestamp == Py_None ? PyLong_FromLongLong(out->ts) : Py_NewRef(timestamp);
    if (out->ts_obj == NULL) {
        Py_CLEAR(out->header_section);
        return -1;
    }
    return 1;
}

static void
record_args_clear(RecordArgs *r)
{
    Py_CLEAR(r->header_section);
    Py_CLEAR(r->ts_obj);
}

/* release() the engine's lock whatever happened before; keep the first error. 0, or -1 with an
 * exception set (the earlier one, else release's). */
static int
release_keeping_error(PyObject *release)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *r = PyObject_CallNoArgs(release);
    if (exc_type != NULL) {
        Py_XDECREF(r);
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return -1;
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* batch.add_callback(index, fn, timestamp_ms), at the slot; -1 with an exception. */
static int
add_callback(PyObject *batch, Py_ssize_t off_callbacks, PyObject *index, PyObject *fn, PyObject *ts)
{
    PyObject *entry = PyTuple_Pack(3, index, fn, ts);
    if (entry == NULL) {
        return -1;
    }
    PyObject *callbacks = SLOT(batch, off_callbacks);
    if (callbacks == NULL || callbacks == Py_None) {
        PyObject *list = PyList_New(1);
        if (list == NULL) {
            Py_DECREF(entry);
            return -1;
        }
        PyList_SET_ITEM(list, 0, entry);  /* steals entry */
        PyObject *old = SLOT(batch, off_callbacks);
        SLOT(batch, off_callbacks) = list;
        Py_XDECREF(old);
        return 0;
    }
    if (!PyList_CheckExact(callbacks)) {
        Py_DECREF(entry);
        PyErr_SetString(PyExc_TypeError, "kprod fast path: a batch's callbacks is not a list");
        return -1;
    }
    int rc = PyList_Append(callbacks, entry);
    Py_DECREF(entry);
    return rc;
}

static PyObject *
fast_send_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastSend *self = (FastSend *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* topic, value, key, partition, timestamp, headers, on_delivery */
    PyObject *a[7] = {NULL, Py_None, Py_None, Py_None, Py_None, Py_None, Py_None};
    if (nargs < 1 || nargs > 3) {
        goto general;  /* the Python signature reports the mistake */
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        a[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            PyObject *v = args[nargs + i];
            int at;
            if (name == str_partition) at = 3;
            else if (name == str_timestamp) at = 4;
            else if (name == str_headers) at = 5;
            else if (name == str_on_delivery) at = 6;
            else if (name == str_value && nargs < 2) at = 1;
            else if (name == str_key && nargs < 3) at = 2;
            else goto general;  /* topic=, a name not interned, or a mistake: Python decides */
            a[at] = v;
        }
    }
    PyObject *topic = a[0], *partition = a[3], *on_delivery = a[6];
    if (on_delivery != Py_None && !PyCallable_Check(on_delivery)) {
        goto fallback;
    }
    RecordArgs rec;
    int taken = record_args_take(a[1], a[2], a[4], a[5], &rec);
    if (taken < 0) {
        return NULL;
    }
    if (taken == 0) {
        goto fallback;
    }
    PyObject *r = PyObject_CallNoArgs(self->acquire);
    if (r == NULL) {
        record_args_clear(&rec);
        return NULL;
    }
    Py_DECREF(r);
    PyObject *action = NULL;
    PyObject *index_obj = NULL;
    PyObject *batch = plain_append(self->appender, topic, partition, rec.ts, rec.key, rec.value, rec.headers);
    if (batch != NULL && batch != Py_None) {
        long long count;
        if (read_ll(SLOT(batch, self->appender->off_record_count), &count) < 0) {
            PyErr_SetString(PyExc_TypeError, "kprod fast send: record_count is not an int");
        }
        else {
            index_obj = PyLong_FromLongLong(count - 1);
        }
        if (index_obj == NULL ||
            (on_delivery != Py_None &&
             add_callback(batch, self->off_callbacks, index_obj, on_delivery, rec.ts_obj) < 0)) {
            Py_CLEAR(batch);
        }
        if (batch != NULL && SLOT(batch, self->appender->off_accepting) != Py_True) {
            action = PyObject_CallOneArg(self->after_append_locked, batch);
            if (action == NULL) {
                Py_CLEAR(batch);
            }
        }
    }
    if (release_keeping_error(self->release) < 0) {
        Py_XDECREF(batch);
        Py_XDECREF(action);
        Py_XDECREF(index_obj);
        record_args_clear(&rec);
        return NULL;
    }
    if (batch == Py_None) {
        Py_DECREF(batch);
        record_args_clear(&rec);
        goto fallback;
    }
    if (action != NULL) {
        int truth = PyObject_IsTrue(action);
        PyObject *done = truth > 0 ? PyObject_CallOneArg(self->after_append, action) : NULL;
        Py_DECREF(action);
        if (truth < 0 || (truth > 0 && done == NULL)) {
            Py_DECREF(batch);
            Py_DECREF(index_obj);
            record_args_clear(&rec);
            return NULL;
        }
        Py_XDECREF(done);
    }
    PyObject *future = self->future_type->tp_alloc(self->future_type, 0);
    if (future == NULL) {
        Py_DECREF(batch);
        Py_DECREF(index_obj);
        record_args_clear(&rec);
        return NULL;
    }
    set_slot(future, self->off_future_batch, batch);
    set_slot(future, self->off_future_index, index_obj);
    set_slot(future, self->off_future_timestamp, Py_NewRef(rec.ts_obj));
    record_args_clear(&rec);
    return future;

fallback:
    return PyObject_Vectorcall(self->fallback, a, 7, NULL);
general:
    return PyObject_Vectorcall(self->fallback_general, args, nargsf, kwnames);
}

static int
FastSend_traverse(FastSend *self, visitproc visit, void *arg)
{
    Py_VISIT(self->appender);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->after_append_locked);
    Py_VISIT(self->after_append);
    Py_VISIT(self->fallback);
    Py_VISIT(self->fallback_general);
    Py_VISIT(self->future_type);
    return 0;
}

static int
FastSend_clear(FastSend *self)
{
    Py_CLEAR(self->appender);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->after_append_locked);
    Py_CLEAR(self->after_append);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->fallback_general);
    Py_CLEAR(self->future_type);
    return 0;
}

static void
FastSend_dealloc(FastSend *self)
{
    PyObject_GC_UnTrack(self);
    FastSend_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FastSend_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kprod._speedups.FastSend",
    .tp_basicsize = sizeof(FastSend),
    .tp_dealloc = (destructor)FastSend_dealloc,
    .tp_vectorcall_offset = offsetof(FastSend, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Producer.send's common case in C; see kprod.sync.Producer.send.",
    .tp_traverse = (traverseproc)FastSend_traverse,
    .tp_clear = (inquiry)FastSend_clear,
};

/* ---------------------------------------------------------------------------------------------
 * FastEnqueue: AsyncProducer.enqueue's common case (kprod/aio.py). Called with the seven arguments
 * of enqueue, positionally; it takes what FastSend takes (the default serializers' bytes and str,
 * an int timestamp, headers in their common forms) and appends under the engine's lock. Returns
 * the record's asyncio future, or (future, action) when AfterAppend asks for something (a full
 * batch), or None: the caller then takes the general path with the same arguments.
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PlainAppender *appender;
    PyObject *acquire;
    PyObject *release;
    PyObject *after_append_locked;
    PyObject *create_future;  /* the loop's create_future */
    Py_ssize_t off_callbacks; /* ProducerBatch.callbacks: None or a list of (index, fn, timestamp ms) */
} FastEnqueue;

static PyObject *
fast_enqueue_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastEnqueue *self = (FastEnqueue *)callable;
    if (PyVectorcall_NARGS(nargsf) != 7 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "FastEnqueue takes (topic, value, key, partition, timestamp, headers, on_delivery)");
        return NULL;
    }
    PyObject *topic = args[0], *partition = args[3], *on_delivery = args[6];
    if (on_delivery != Py_None && !PyCallable_Check(on_delivery)) {
        Py_RETURN_NONE;
    }
    RecordArgs rec;
    int taken = record_args_take(args[1], args[2], args[4], args[5], &rec);
    if (taken <= 0) {
        if (taken < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *future = PyObject_CallNoArgs(self->create_future);
    if (future == NULL) {
        record_args_clear(&rec);
        return NULL;
    }
    PyObject *r = PyObject_CallNoArgs(self->acquire);
    if (r == NULL) {
        record_args_clear(&rec);
        Py_DECREF(future);
        return NULL;
    }
    Py_DECREF(r);
    PyObject *action = NULL;
    PyObject *batch = plain_append(self->appender, topic, partition, rec.ts, rec.key, rec.value, rec.headers);
    if (batch != NULL && batch != Py_None) {
        long long count;
        PyObject *index_obj = NULL;
        if (read_ll(SLOT(batch, self->appender->off_record_count), &count) < 0) {
            PyErr_SetString(PyExc_TypeError, "kprod fast enqueue: record_count is not an int");
        }
        else {
            index_obj = PyLong_FromLongLong(count - 1);
        }
        if (index_obj == NULL ||
            add_callback(batch, self->off_callbacks, index_obj, future, rec.ts_obj) < 0 ||
            (on_delivery != Py_None &&
             add_callback(batch, self->off_callbacks, index_obj, on_delivery, rec.ts_obj) < 0)) {
            Py_CLEAR(batch);
        }
        Py_XDECREF(index_obj);
        if (batch != NULL && SLOT(batch, self->appender->off_accepting) != Py_True) {
            action = PyObject_CallOneArg(self->after_append_locked, batch);
            if (action == NULL) {
                Py_CLEAR(batch);
            }
        }
    }
    record_args_clear(&rec);
    if (release_keeping_error(self->release) < 0) {
        Py_XDECREF(batch);
        Py_XDECREF(action);
        Py_DECREF(future);
        return NULL;
    }
    int refused = batch == Py_None;
    Py_DECREF(batch);
    if (refused) {
        Py_DECREF(future);
        Py_RETURN_NONE;
    }
    if (action != NULL) {
        int truth = PyObject_IsTrue(action);
        if (truth < 0) {
            Py_DECREF(action);
            Py_DECREF(future);
            return NULL;
        }
        if (truth) {
            PyObject *pair = PyTuple_Pack(2, future, action);
            Py_DECREF(action);
            Py_DECREF(future);
            return pair;
        }
        Py_DECREF(action);
    }
    return future;
}

static int
FastEnqueue_traverse(FastEnqueue *self, visitproc visit, void *arg)
{
    Py_VISIT(self->appender);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->after_append_locked);
    Py_VISIT(self->create_future);
    return 0;
}

static int
FastEnqueue_clear(FastEnqueue *self)
{
    Py_CLEAR(self->appender);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->after_append_locked);
    Py_CLEAR(self->create_future);
    return 0;
}

static void
FastEnqueue_dealloc(FastEnqueue *self)
{
    PyObject_GC_UnTrack(self);
    FastEnqueue_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FastEnqueue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kprod._speedups.FastEnqueue",
    .tp_basicsize = sizeof(FastEnqueue),
    .tp_dealloc = (destructor)FastEnqueue_dealloc,
    .tp_vectorcall_offset = offsetof(FastEnqueue, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "AsyncProducer.enqueue's common case in C; see kprod.aio.AsyncProducer.enqueue.",
    .tp_traverse = (traverseproc)FastEnqueue_traverse,
    .tp_clear = (inquiry)FastEnqueue_clear,
};

/* The offset of the __slots__ member `name` of `type`, or -1 with an exception. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY)) {
            offset = member->offset;
        }
    }
    Py_DECREF(descr);
    if (offset < 0) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable __slots__ member", type->tp_name, name);
    }
    return offset;
}

static PyObject *
make_plain_appender(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {
        "accumulator", "fast_appenders", "switch_sticky", "txn", "in_transaction",
        "max_bytes", "memory_limit", "batch_limit", "batch_size", "ignore_keys",
        "batch_type", "appender_type", "queue_type", "sticky_type", NULL,
    };
    PyObject *acc, *fast_appenders, *switch_sticky, *txn, *in_transaction;
    long long max_bytes, memory_limit, batch_limit, batch_size;
    int ignore_keys;
    PyTypeObject *batch_type, *appender_type, *queue_type, *sticky_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OO!OOOLLLLpO!O!O!O!:plain_appender", keywords,
                                     &acc, &PyDict_Type, &fast_appenders, &switch_sticky, &txn,
                                     &in_transaction, &max_bytes, &memory_limit,
                                     &batch_limit, &batch_size, &ignore_keys,
                                     &PyType_Type, &batch_type, &PyType_Type, &appender_type,
                                     &PyType_Type, &queue_type, &PyType_Type, &sticky_type)) {
        return NULL;
    }
    if (!PyCallable_Check(switch_sticky)) {
        PyErr_SetString(PyExc_TypeError, "switch_sticky must be callable");
        return NULL;
    }
    if (!PyDict_CheckExact(fast_appenders)) {
        PyErr_SetString(PyExc_TypeError, "fast_appenders must be a dict");
        return NULL;
    }
    if (batch_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "batch_size must be positive");
        return NULL;
    }
    PlainAppender *self = PyObject_GC_New(PlainAppender, &PlainAppender_Type);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = PlainAppender_vectorcall;
    self->acc = Py_NewRef(acc);
    self->fast_appenders = Py_NewRef(fast_appenders);
    self->switch_sticky = Py_NewRef(switch_sticky);
    self->txn = Py_NewRef(txn);
    self->in_transaction = Py_NewRef(in_transaction);
    self->batch_type = (PyTypeObject *)Py_NewRef(batch_type);
    self->appender_type = (PyTypeObject *)Py_NewRef(appender_type);
    self->queue_type = (PyTypeObject *)Py_NewRef(queue_type);
    self->sticky_type = (PyTypeObject *)Py_NewRef(sticky_type);
    self->max_bytes = max_bytes;
    self->memory_limit = memory_limit;
    self->batch_limit = batch_limit;
    self->batch_size = batch_size;
    self->ignore_keys = ignore_keys;
    PyObject_GC_Track(self);
    if (Py_TYPE(acc)->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "accumulator must be a RecordAccumulator (slots, no __dict__)");
        Py_DECREF(self);
        return NULL;
    }
    if ((self->off_acc_used_bytes = slot_offset(Py_TYPE(acc), "used_bytes")) < 0 ||
        (self->off_acc_full_batches = slot_offset(Py_TYPE(acc), "full_batches")) < 0 ||
        (self->off_accepting = slot_offset(batch_type, "accepting")) < 0 ||
        (self->off_size_bytes = slot_offset(batch_type, "size_bytes")) < 0 ||
        (self->off_record_count = slot_offset(batch_type, "record_count")) < 0 ||
        (self->off_base_ts = slot_offset(batch_type, "base_timestamp_ms")) < 0 ||
        (self->off_max_ts = slot_offset(batch_type, "max_timestamp_ms")) < 0 ||
        (self->off_buffer = slot_offset(batch_type, "buffer")) < 0 ||
        (self->off_app_count = slot_offset(appender_type, "count")) < 0 ||
        (self->off_app_sticky = slot_offset(appender_type, "sticky")) < 0 ||
        (self->off_app_sticky_batch = slot_offset(appender_type, "sticky_batch")) < 0 ||
        (self->off_app_queues = slot_offset(appender_type, "queues")) < 0 ||
        (self->off_queue_batches = slot_offset(queue_type, "batches")) < 0 ||
        (self->off_sticky_batch_size = slot_offset(sticky_type, "batch_size")) < 0 ||
        (self->off_sticky_produced = slot_offset(sticky_type, "produced_bytes")) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
make_fast_send(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {
        "appender", "lock", "after_append_locked", "after_append", "fallback", "fallback_general",
        "future_type", NULL,
    };
    PyObject *appender, *lock, *after_append_locked, *after_append, *fallback, *fallback_general;
    PyTypeObject *future_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$O!OOOOOO!:fast_send", keywords,
                                     &PlainAppender_Type, &appender, &lock, &after_append_locked,
                                     &after_append, &fallback, &fallback_general, &PyType_Type, &future_type)) {
        return NULL;
    }
    if (future_type->tp_new != PyBaseObject_Type.tp_new || future_type->tp_init != PyBaseObject_Type.tp_init) {
        PyErr_SetString(PyExc_TypeError, "future_type must have neither __new__ nor __init__");
        return NULL;
    }
    Py_ssize_t off_batch, off_index, off_timestamp, off_callbacks;
    if ((off_callbacks = slot_offset(((PlainAppender *)appender)->batch_type, "callbacks")) < 0 ||
        (off_batch = slot_offset(future_type, "_batch")) < 0 ||
        (off_index = slot_offset(future_type, "_index")) < 0 ||
        (off_timestamp = slot_offset(future_type, "_timestamp")) < 0) {
        return NULL;
    }
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    PyObject *release = acquire == NULL ? NULL : PyObject_GetAttrString(lock, "release");
    if (release == NULL) {
        Py_XDECREF(acquire);
        return NULL;
    }
    FastSend *self = PyObject_GC_New(FastSend, &FastSend_Type);
    if (self == NULL) {
        Py_DECREF(acquire);
        Py_DECREF(release);
        return NULL;
    }
    self->vectorcall = fast_send_call;
    self->appender = (PlainAppender *)Py_NewRef(appender);
    self->acquire = acquire;
    self->release = release;
    self->after_append_locked = Py_NewRef(after_append_locked);
    self->after_append = Py_NewRef(after_append);
    self->fallback = Py_NewRef(fallback);
    self->fallback_general = Py_NewRef(fallback_general);
    self->future_type = (PyTypeObject *)Py_NewRef(future_type);
    self->off_future_batch = off_batch;
    self->off_future_index = off_index;
    self->off_future_timestamp = off_timestamp;
    self->off_callbacks = off_callbacks;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
make_fast_enqueue(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"appender", "lock", "after_append_locked", "create_future", "batch_type", NULL};
    PyObject *appender, *lock, *after_append_locked, *create_future;
    PyTypeObject *batch_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$O!OOOO!:fast_enqueue", keywords, &PlainAppender_Type,
                                     &appender, &lock, &after_append_locked, &create_future,
                                     &PyType_Type, &batch_type)) {
        return NULL;
    }
    if (batch_type != ((PlainAppender *)appender)->batch_type) {
        PyErr_SetString(PyExc_TypeError, "batch_type must be the appender's batch type");
        return NULL;
    }
    Py_ssize_t off_callbacks = slot_offset(batch_type, "callbacks");
    if (off_callbacks < 0) {
        return NULL;
    }
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    PyObject *release = acquire == NULL ? NULL : PyObject_GetAttrString(lock, "release");
    if (release == NULL) {
        Py_XDECREF(acquire);
        return NULL;
    }
    FastEnqueue *self = PyObject_GC_New(FastEnqueue, &FastEnqueue_Type);
    if (self == NULL) {
        Py_DECREF(acquire);
        Py_DECREF(release);
        return NULL;
    }
    self->vectorcall = fast_enqueue_call;
    self->appender = (PlainAppender *)Py_NewRef(appender);
    self->acquire = acquire;
    self->release = release;
    self->after_append_locked = Py_NewRef(after_append_locked);
    self->create_future = Py_NewRef(create_future);
    self->off_callbacks = off_callbacks;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyMethodDef module_methods[] = {
    {"fast_enqueue", (PyCFunction)(void (*)(void))make_fast_enqueue, METH_VARARGS | METH_KEYWORDS,
     "fast_enqueue(*, appender, lock, after_append_locked, create_future, batch_type) -> FastEnqueue"},
    {"murmur2_u32", (PyCFunction)py_murmur2_u32, METH_O,
     "murmur2_u32(data: bytes) -> int: Kafka's murmur2 of data as an unsigned 32-bit int."},
    {"fast_send", (PyCFunction)(void (*)(void))make_fast_send, METH_VARARGS | METH_KEYWORDS,
     "fast_send(*, appender, lock, after_append_locked, after_append, fallback, fallback_general, "
     "future_type) -> FastSend"},
    {"plain_appender", (PyCFunction)(void (*)(void))make_plain_appender, METH_VARARGS | METH_KEYWORDS,
     "plain_appender(*, accumulator, fast_appenders, switch_sticky, txn, in_transaction, "
     "max_bytes, memory_limit, batch_limit, batch_size, ignore_keys, batch_type, appender_type, "
     "queue_type, sticky_type) -> PlainAppender"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kprod._speedups",
    .m_doc = "The per-record append fast path in C (optional; kprod._core.appender is the reference).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&PlainAppender_Type) < 0 || PyType_Ready(&FastSend_Type) < 0 ||
        PyType_Ready(&FastEnqueue_Type) < 0) {
        return NULL;
    }
    str_topic = PyUnicode_InternFromString("topic");
    str_value = PyUnicode_InternFromString("value");
    str_key = PyUnicode_InternFromString("key");
    str_partition = PyUnicode_InternFromString("partition");
    str_timestamp = PyUnicode_InternFromString("timestamp");
    str_headers = PyUnicode_InternFromString("headers");
    str_on_delivery = PyUnicode_InternFromString("on_delivery");
    if (str_topic == NULL || str_value == NULL || str_key == NULL || str_partition == NULL ||
        str_timestamp == NULL || str_headers == NULL || str_on_delivery == NULL) {
        return NULL;
    }
    str_state = PyUnicode_InternFromString("state");
    if (str_state == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&PlainAppender_Type);
    if (PyModule_AddObject(module, "PlainAppender", (PyObject *)&PlainAppender_Type) < 0) {
        Py_DECREF(&PlainAppender_Type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&FastSend_Type);
    if (PyModule_AddObject(module, "FastSend", (PyObject *)&FastSend_Type) < 0) {
        Py_DECREF(&FastSend_Type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&FastEnqueue_Type);
    if (PyModule_AddObject(module, "FastEnqueue", (PyObject *)&FastEnqueue_Type) < 0) {
        Py_DECREF(&FastEnqueue_Type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
