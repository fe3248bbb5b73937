// SPDX-License-Identifier: GPL-2.0
/*
 * vdmabuf_loopback: the user ABI of the Vdmabuf RFC (v4, 2021; never merged),
 * both of its nodes in one kernel, for testing a vdmabuf consumer without a
 * guest. See /work/shared/reference/vdmabuf-abi.md for the ABI byte by byte.
 *
 *   /dev/virtio-vdmabuf  producer ("guest") node: EXPORT a DMA-BUF fd with up
 *                        to 192 bytes of private data, which assigns a 128-bit
 *                        buffer id; read()/poll() deliver release notices.
 *   /dev/vhost-vdmabuf   consumer ("host") node: read()/poll() deliver export
 *                        events (a header, then the private data); IMPORT
 *                        gives a new fd for the *same* dma_buf; RELEASE ends
 *                        the export and queues a release notice for the
 *                        producer that exported it.
 *
 * Unlike the RFC (which shared the guest's pages and built a new dma_buf from
 * them on the host, the reason it was NACKed), this module never touches a
 * buffer's pages: it holds a reference on the exported dma_buf from EXPORT to
 * RELEASE and hands out further fds for that same dma_buf.
 *
 * Where the ABI document is silent, this follows what the RFC's code did,
 * unless that was plainly a bug; each such choice is marked "RFC:" below.
 *
 * Locking: vdl_lock (a mutex) guards the table of exported buffers and the
 * list of open consumer files. Each open file has an event queue guarded by
 * its own spinlock (taken inside vdl_lock, never the other way round), a wait
 * queue for read()/poll(), and a mutex that serialises its readers. Nothing is
 * copied to or from user space while a lock other than a queue's read mutex
 * is held.
 *
 * Read-only counters under /sys/module/vdmabuf_loopback/parameters/:
 *   exported        buffers exported and not yet released (or withdrawn)
 *   events_dropped  events dropped from full queues since the module loaded
 */

#include <linux/atomic.h>
#include <linux/build_bug.h>
#include <linux/dma-buf.h>
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/stddef.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

/* ---- The user ABI (x86-64; RFC v4 include/uapi/linux/virtio_vdmabuf.h) ---- */

/* Private data is at most this long (the RFC's MAX_SIZE_PRIV_DATA). */
#define VDMABUF_MAX_PRIV 192
/* An event queue holds at most this many events; a full one drops its oldest. */
#define VDMABUF_MAX_EVENTS 32

struct vdmabuf_buf_id {
	__u64 id;
	__s32 rng_key[2];
};

/* An event: this header, then `size` bytes of private data. */
struct vdmabuf_e_hdr {
	struct vdmabuf_buf_id buf_id;
	__s32 size;
	__u32 pad; /* implicit in the RFC's struct; always written as 0 */
};

/* IMPORT and RELEASE. */
struct vdmabuf_import {
	struct vdmabuf_buf_id buf_id;
	__s32 flags;
	__s32 fd; /* out (IMPORT) */
};

/* EXPORT. The RFC declares `char *priv`: a 64-bit pointer here. */
struct vdmabuf_export {
	__s32 fd;
	__u32 pad0;
	struct vdmabuf_buf_id buf_id; /* out */
	__s32 sz_priv;
	__u32 pad1;
	__u64 priv;
};

/*
 * _IOC_NONE with the struct's size in the size bits: the RFC's numbers. The
 * kernel copies the struct in and out all the same.
 */
#define VDMABUF_IOCTL_IMPORT \
	_IOC(_IOC_NONE, 'G', 2, sizeof(struct vdmabuf_import))
#define VDMABUF_IOCTL_RELEASE \
	_IOC(_IOC_NONE, 'G', 3, sizeof(struct vdmabuf_import))
#define VDMABUF_IOCTL_EXPORT \
	_IOC(_IOC_NONE, 'G', 4, sizeof(struct vdmabuf_export))

static_assert(sizeof(struct vdmabuf_buf_id) == 16);
static_assert(offsetof(struct vdmabuf_buf_id, rng_key) == 8);
static_assert(sizeof(struct vdmabuf_e_hdr) == 24);
static_assert(offsetof(struct vdmabuf_e_hdr, size) == 16);
static_assert(sizeof(struct vdmabuf_import) == 24);
static_assert(offsetof(struct vdmabuf_import, flags) == 16);
static_assert(offsetof(struct vdmabuf_import, fd) == 20);
static_assert(sizeof(struct vdmabuf_export) == 40);
static_assert(offsetof(struct vdmabuf_export, buf_id) == 8);
static_assert(offsetof(struct vdmabuf_export, sz_priv) == 24);
static_assert(offsetof(struct vdmabuf_export, priv) == 32);
static_assert(VDMABUF_IOCTL_IMPORT == 0x00184702);
static_assert(VDMABUF_IOCTL_RELEASE == 0x00184703);
static_assert(VDMABUF_IOCTL_EXPORT == 0x00284704);

/* ---- State ---- */

struct vdl_event {
	struct list_head link;
	struct vdmabuf_e_hdr hdr;
	u8 data[]; /* hdr.size bytes */
};

struct vdl_queue {
	spinlock_t lock; /* events, pending */
	struct list_head events;
	unsigned int pending;
	wait_queue_head_t wait;
	struct mutex read_lock; /* one reader at a time keeps events in order */
};

/* An open file of either node. */
struct vdl_file {
	struct vdl_queue queue;
	bool consumer;
	struct list_head consumer_link; /* in vdl_consumers, under vdl_lock */
	u32 tgid; /* who opened it: the upper half of the ids it assigns */
};

/* An exported buffer: in vdl_buffers from EXPORT until RELEASE. */
struct vdl_buffer {
	struct list_head link;
	struct vdmabuf_buf_id id;
	struct dma_buf *dmabuf; /* our reference */
	struct vdl_file *producer; /* the producer file that exported it */
};

static DEFINE_MUTEX(vdl_lock);
static LIST_HEAD(vdl_buffers);
static LIST_HEAD(vdl_consumers);
static atomic_t vdl_counter = ATOMIC_INIT(0);

static atomic_t vdl_exported = ATOMIC_INIT(0);
static atomic_t vdl_events_dropped = ATOMIC_INIT(0);

/* ---- Read-only counters ---- */

static int vdl_counter_get(char *buffer, const struct kernel_param *kp)
{
	return sysfs_emit(buffer, "%d\n", atomic_read((atomic_t *)kp->arg));
}

static int vdl_counter_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM; /* counters, not settings */
}

static const struct kernel_param_ops vdl_counter_ops = {
	.get = vdl_counter_get,
	.set = vdl_counter_set,
};

module_param_cb(exported, &vdl_counter_ops, &vdl_exported, 0444);
MODULE_PARM_DESC(exported, "Buffers exported and not yet released (read-only)");
module_param_cb(events_dropped, &vdl_counter_ops, &vdl_events_dropped, 0444);
MODULE_PARM_DESC(events_dropped,
		 "Events dropped from full queues since load (read-only)");

/* ---- Event queues ---- */

static void vdl_queue_init(struct vdl_queue *q)
{
	spin_lock_init(&q->lock);
	INIT_LIST_HEAD(&q->events);
	q->pending = 0;
	init_waitqueue_head(&q->wait);
	mutex_init(&q->read_lock);
}

static void vdl_queue_free(struct vdl_queue *q)
{
	struct vdl_event *e, *tmp;

	/* Only at release: no reader, no writer can reach the queue now. */
	list_for_each_entry_safe(e, tmp, &q->events, link) {
		list_del(&e->link);
		kfree(e);
	}
	q->pending = 0;
	mutex_destroy(&q->read_lock);
}

static struct vdl_event *vdl_event_new(const struct vdmabuf_buf_id *id,
				       const void *data, u32 size)
{
	struct vdl_event *e = kzalloc(struct_size(e, data, size), GFP_KERNEL);

	if (!e)
		return NULL;
	e->hdr.buf_id = *id;
	e->hdr.size = size;
	if (size)
		memcpy(e->data, data, size);
	return e;
}

static size_t vdl_event_len(const struct vdl_event *e)
{
	return sizeof(e->hdr) + e->hdr.size;
}

/*
 * Queues @e (taking it over), dropping the oldest event if the queue is full,
 * and wakes readers. RFC: the same drop-the-oldest rule, at 32 events.
 */
static void vdl_queue_push(struct vdl_queue *q, struct vdl_event *e)
{
	struct vdl_event *oldest = NULL;

	spin_lock(&q->lock);
	if (q->pending >= VDMABUF_MAX_EVENTS) {
		oldest = list_first_entry(&q->events, struct vdl_event, link);
		list_del(&oldest->link);
		q->pending--;
	}
	list_add_tail(&e->link, &q->events);
	q->pending++;
	spin_unlock(&q->lock);

	if (oldest) {
		atomic_inc(&vdl_events_dropped);
		kfree(oldest);
	}
	wake_up_interruptible_poll(&q->wait, EPOLLIN | EPOLLRDNORM);
}

static bool vdl_queue_empty(struct vdl_queue *q)
{
	bool empty;

	spin_lock(&q->lock);
	empty = list_empty(&q->events);
	spin_unlock(&q->lock);
	return empty;
}

/*
 * read() on either node: as many whole events as fit in @count bytes, oldest
 * first. An event that does not fit stays queued.
 *
 * RFC (and drm_read(), which it copied): when even the first event does not
 * fit, read() returns 0 and leaves it queued; with nothing queued a blocking
 * read() waits and a non-blocking one fails with EAGAIN.
 */
static ssize_t vdl_read(struct file *filp, char __user *buf, size_t count,
			loff_t *pos)
{
	struct vdl_file *vf = filp->private_data;
	struct vdl_queue *q = &vf->queue;
	ssize_t copied = 0;
	int ret;

	ret = mutex_lock_interruptible(&q->read_lock);
	if (ret)
		return ret;

	for (;;) {
		struct vdl_event *e;
		bool queued;
		size_t len;

		spin_lock(&q->lock);
		e = list_first_entry_or_null(&q->events, struct vdl_event, link);
		queued = e != NULL;
		if (e && vdl_event_len(e) <= count - copied) {
			list_del(&e->link);
			q->pending--;
		} else {
			e = NULL;
		}
		spin_unlock(&q->lock);

		if (!e) {
			if (queued || copied)
				break; /* the next one does not fit, or done */
			if (filp->f_flags & O_NONBLOCK) {
				ret = -EAGAIN;
				break;
			}
			mutex_unlock(&q->read_lock);
			ret = wait_event_interruptible(q->wait,
						       !vdl_queue_empty(q));
			if (ret)
				return ret;
			ret = mutex_lock_interruptible(&q->read_lock);
			if (ret)
				return ret;
			continue;
		}

		/* The event is ours now: copy it without the spinlock. */
		len = vdl_event_len(e);
		if (copy_to_user(buf + copied, &e->hdr, sizeof(e->hdr)) ||
		    copy_to_user(buf + copied + sizeof(e->hdr), e->data,
				 e->hdr.size)) {
			/* Put it back in front, unless newer ones filled the
			 * queue meanwhile: then it is the oldest, and dropped.
			 */
			bool drop;

			spin_lock(&q->lock);
			drop = q->pending >= VDMABUF_MAX_EVENTS;
			if (!drop) {
				list_add(&e->link, &q->events);
				q->pending++;
			}
			spin_unlock(&q->lock);
			if (drop) {
				atomic_inc(&vdl_events_dropped);
				kfree(e);
			}
			if (!copied)
				ret = -EFAULT;
			break;
		}
		copied += len;
		kfree(e);
	}

	mutex_unlock(&q->read_lock);
	return copied ? copied : ret;
}

static __poll_t vdl_poll(struct file *filp, poll_table *wait)
{
	struct vdl_file *vf = filp->private_data;

	poll_wait(filp, &vf->queue.wait, wait);
	return vdl_queue_empty(&vf->queue) ? 0 : EPOLLIN | EPOLLRDNORM;
}

/* ---- Open and close ---- */

static int vdl_open(struct inode *inode, struct file *filp, bool consumer)
{
	struct vdl_file *vf;
	int ret;

	ret = nonseekable_open(inode, filp);
	if (ret)
		return ret;

	vf = kzalloc(sizeof(*vf), GFP_KERNEL);
	if (!vf)
		return -ENOMEM;
	vdl_queue_init(&vf->queue);
	vf->consumer = consumer;
	vf->tgid = task_tgid_nr(current);
	INIT_LIST_HEAD(&vf->consumer_link);
	filp->private_data = vf;

	if (consumer) {
		mutex_lock(&vdl_lock);
		list_add_tail(&vf->consumer_link, &vdl_consumers);
		mutex_unlock(&vdl_lock);
	}
	return 0;
}

static int vdl_producer_open(struct inode *inode, struct file *filp)
{
	return vdl_open(inode, filp, false);
}

static int vdl_consumer_open(struct inode *inode, struct file *filp)
{
	return vdl_open(inode, filp, true);
}

/*
 * Closing a producer file withdraws what it exported and has not had released
 * (its references are dropped; IMPORT of those ids fails from now on), as
 * Intel's later vdmabuf forks unexport a closing file's buffers. Closing a
 * consumer file drops its queued events; buffers stay exported (the RFC's host
 * kept them too), and their producer still waits for a RELEASE.
 */
static int vdl_release(struct inode *inode, struct file *filp)
{
	struct vdl_file *vf = filp->private_data;
	struct vdl_buffer *b, *tmp;
	LIST_HEAD(withdrawn);

	mutex_lock(&vdl_lock);
	if (vf->consumer) {
		list_del(&vf->consumer_link);
	} else {
		list_for_each_entry_safe(b, tmp, &vdl_buffers, link) {
			if (b->producer == vf) {
				list_move(&b->link, &withdrawn);
				atomic_dec(&vdl_exported);
			}
		}
	}
	mutex_unlock(&vdl_lock);

	list_for_each_entry_safe(b, tmp, &withdrawn, link) {
		list_del(&b->link);
		dma_buf_put(b->dmabuf);
		kfree(b);
	}
	vdl_queue_free(&vf->queue);
	kfree(vf);
	return 0;
}

/* ---- ioctls ---- */

/* Caller holds vdl_lock. The whole 128-bit id must match, key included. */
static struct vdl_buffer *vdl_find(const struct vdmabuf_buf_id *id)
{
	struct vdl_buffer *b;

	lockdep_assert_held(&vdl_lock);
	list_for_each_entry(b, &vdl_buffers, link) {
		if (b->id.id == id->id && b->id.rng_key[0] == id->rng_key[0] &&
		    b->id.rng_key[1] == id->rng_key[1])
			return b;
	}
	return NULL;
}

/*
 * RFC's id: the VM's pid in the upper 32 bits (here: the producer's tgid), a
 * counter in the lower 32 (here: one for the whole module, skipping 0), and 8
 * random bytes in rng_key.
 */
static struct vdmabuf_buf_id vdl_new_id(const struct vdl_file *producer)
{
	struct vdmabuf_buf_id id = {};
	u32 n;

	do {
		n = (u32)atomic_inc_return(&vdl_counter);
	} while (!n);
	id.id = ((u64)producer->tgid << 32) | n;
	get_random_bytes(id.rng_key, sizeof(id.rng_key));
	return id;
}

/*
 * EXPORT {fd, sz_priv, priv} -> buf_id; returns 0.
 *   EFAULT  the struct cannot be read or written back
 *   EINVAL  sz_priv < 0 or > 192; private data unreadable (RFC: EINVAL when
 *           copy_from_user of priv fails); fd is open but not a DMA-BUF
 *   EBADF   fd is not an open file descriptor
 *   ENOMEM
 * RFC v4 silently truncated private data over 192 bytes to 192; the ABI says
 * "at most 192", and a silent truncation would hide a producer's bug, so this
 * refuses it. The buffer is published (and the consumers' events queued) only
 * after the id has been written back, so a failed EXPORT leaves nothing.
 */
static long vdl_ioctl_export(struct vdl_file *vf, void __user *argp)
{
	struct vdmabuf_export arg;
	struct vdl_buffer *b;
	struct vdl_file *c;
	u8 priv[VDMABUF_MAX_PRIV];
	struct dma_buf *dmabuf;
	u32 size;
	int ret;

	if (copy_from_user(&arg, argp, sizeof(arg)))
		return -EFAULT;
	if (arg.sz_priv < 0 || arg.sz_priv > VDMABUF_MAX_PRIV)
		return -EINVAL;
	size = arg.sz_priv;
	if (size && copy_from_user(priv, u64_to_user_ptr(arg.priv), size))
		return -EINVAL;

	/* EBADF: not an open fd; EINVAL: not a DMA-BUF. Takes a reference. */
	dmabuf = dma_buf_get(arg.fd);
	if (IS_ERR(dmabuf))
		return PTR_ERR(dmabuf);

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b) {
		ret = -ENOMEM;
		goto put;
	}
	b->dmabuf = dmabuf;
	b->producer = vf;
	b->id = vdl_new_id(vf);

	arg.buf_id = b->id;
	if (copy_to_user(argp, &arg, sizeof(arg))) {
		ret = -EFAULT;
		goto free;
	}

	mutex_lock(&vdl_lock);
	list_add_tail(&b->link, &vdl_buffers);
	atomic_inc(&vdl_exported);
	list_for_each_entry(c, &vdl_consumers, consumer_link) {
		struct vdl_event *e = vdl_event_new(&b->id, priv, size);

		if (e) {
			vdl_queue_push(&c->queue, e);
		} else {
			atomic_inc(&vdl_events_dropped);
			pr_warn_ratelimited("vdmabuf_loopback: out of memory, export event dropped\n");
		}
	}
	mutex_unlock(&vdl_lock);
	return 0;

free:
	kfree(b);
put:
	dma_buf_put(dmabuf);
	return ret;
}

/*
 * IMPORT {buf_id, flags} -> fd, a new file descriptor for the exported
 * dma_buf itself (the same struct file: fstat gives the exporter's inode);
 * returns 0 (RFC: 0, the fd goes in the struct). Any number of IMPORTs of one
 * id are allowed until it is released (RFC: the same).
 *   EFAULT  the struct cannot be read or written back
 *   EINVAL  flags other than 0 and O_CLOEXEC (RFC passed flags to
 *           dma_buf_fd() unchecked; the ABI allows only these two)
 *   ENOENT  no exported buffer has this id (RFC: ENOENT), e.g. released
 *   EMFILE
 * dma_buf_fd() is get_unused_fd_flags() + fd_install(); done here in two
 * steps, so that an fd is installed only once the struct has been written.
 */
static long vdl_ioctl_import(void __user *argp)
{
	struct vdmabuf_import arg;
	struct vdl_buffer *b;
	struct dma_buf *dmabuf = NULL;
	int fd;

	if (copy_from_user(&arg, argp, sizeof(arg)))
		return -EFAULT;
	if (arg.flags & ~O_CLOEXEC)
		return -EINVAL;

	mutex_lock(&vdl_lock);
	b = vdl_find(&arg.buf_id);
	if (b) {
		dmabuf = b->dmabuf;
		get_dma_buf(dmabuf);
	}
	mutex_unlock(&vdl_lock);
	if (!dmabuf)
		return -ENOENT;

	fd = get_unused_fd_flags(arg.flags);
	if (fd < 0) {
		dma_buf_put(dmabuf);
		return fd;
	}

	arg.fd = fd;
	if (copy_to_user(argp, &arg, sizeof(arg))) {
		put_unused_fd(fd);
		dma_buf_put(dmabuf);
		return -EFAULT;
	}
	fd_install(fd, dmabuf->file); /* the fd now owns our reference */
	return 0;
}

/*
 * RELEASE {buf_id}: ends the export. Drops the module's reference (fds from
 * IMPORT keep theirs) and queues a release notice (the header with this id,
 * size 0) for the producer that exported it; returns 0.
 *   EFAULT  the struct cannot be read
 *   ENOENT  no exported buffer has this id: unknown, or already released
 * RFC: EINVAL for an unknown id, and a second RELEASE of one id was not
 * caught (the host only forwarded it); here the first RELEASE ends the export,
 * so a second one finds nothing, and both cases get IMPORT's ENOENT.
 * The RFC v4 guest repeated the private data in its release notice; the ABI
 * document (and this module) send the header alone, size 0.
 */
static long vdl_ioctl_release(void __user *argp)
{
	struct vdmabuf_import arg;
	struct vdl_buffer *b;
	struct vdl_event *notice;

	if (copy_from_user(&arg, argp, sizeof(arg)))
		return -EFAULT;

	/* Allocated first, so that a release never fails half way. */
	notice = vdl_event_new(&arg.buf_id, NULL, 0);
	if (!notice)
		return -ENOMEM;

	mutex_lock(&vdl_lock);
	b = vdl_find(&arg.buf_id);
	if (b) {
		list_del(&b->link);
		atomic_dec(&vdl_exported);
		/* The producer file is open: closing it would have withdrawn b. */
		vdl_queue_push(&b->producer->queue, notice);
		notice = NULL;
	}
	mutex_unlock(&vdl_lock);

	if (!b) {
		kfree(notice);
		return -ENOENT;
	}
	dma_buf_put(b->dmabuf);
	kfree(b);
	return 0;
}

/*
 * Only the exact request numbers are known; anything else (another size or
 * direction, e.g. nix's ioctl_none! numbers with size 0, or a consumer's
 * ioctl on the producer node) gets ENOTTY. RFC: it dispatched on the number
 * bits alone and answered EINVAL to unknown ones.
 */
static long vdl_producer_ioctl(struct file *filp, unsigned int cmd,
			       unsigned long param)
{
	struct vdl_file *vf = filp->private_data;

	switch (cmd) {
	case VDMABUF_IOCTL_EXPORT:
		return vdl_ioctl_export(vf, (void __user *)param);
	default:
		return -ENOTTY;
	}
}

static long vdl_consumer_ioctl(struct file *filp, unsigned int cmd,
			       unsigned long param)
{
	switch (cmd) {
	case VDMABUF_IOCTL_IMPORT:
		return vdl_ioctl_import((void __user *)param);
	case VDMABUF_IOCTL_RELEASE:
		return vdl_ioctl_release((void __user *)param);
	default:
		return -ENOTTY;
	}
}

/* ---- Registration ---- */

/* No compat_ioctl: the structs hold a 64-bit pointer (x86-64 only). */
static const struct file_operations vdl_producer_fops = {
	.owner = THIS_MODULE,
	.open = vdl_producer_open,
	.release = vdl_release,
	.read = vdl_read,
	.poll = vdl_poll,
	.unlocked_ioctl = vdl_producer_ioctl,
};

static const struct file_operations vdl_consumer_fops = {
	.owner = THIS_MODULE,
	.open = vdl_consumer_open,
	.release = vdl_release,
	.read = vdl_read,
	.poll = vdl_poll,
	.unlocked_ioctl = vdl_consumer_ioctl,
};

static struct miscdevice vdl_producer_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "virtio-vdmabuf",
	.fops = &vdl_producer_fops,
	.mode = 0600,
};

static struct miscdevice vdl_consumer_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vhost-vdmabuf",
	.fops = &vdl_consumer_fops,
	.mode = 0600,
};

static int __init vdl_init(void)
{
	int ret;

	ret = misc_register(&vdl_producer_dev);
	if (ret)
		return ret;
	ret = misc_register(&vdl_consumer_dev);
	if (ret) {
		misc_deregister(&vdl_producer_dev);
		return ret;
	}
	return 0;
}

static void __exit vdl_exit(void)
{
	struct vdl_buffer *b, *tmp;

	misc_deregister(&vdl_consumer_dev);
	misc_deregister(&vdl_producer_dev);

	/*
	 * No file is open (each holds a module reference), and closing a
	 * producer withdraws its buffers: the table is empty. Drop anything
	 * left all the same.
	 */
	mutex_lock(&vdl_lock);
	WARN_ON(!list_empty(&vdl_buffers) || !list_empty(&vdl_consumers));
	list_for_each_entry_safe(b, tmp, &vdl_buffers, link) {
		list_del(&b->link);
		dma_buf_put(b->dmabuf);
		kfree(b);
	}
	mutex_unlock(&vdl_lock);
}

module_init(vdl_init);
module_exit(vdl_exit);

MODULE_DESCRIPTION("Vdmabuf RFC v4 user ABI, producer and consumer nodes looped back in one kernel (for tests)");
MODULE_LICENSE("GPL");
/*
 * dma_buf_get()/dma_buf_put()/... live in the DMA_BUF symbol namespace.
 * MODULE_IMPORT_NS() takes a bare token up to 6.12 and a string from 6.13;
 * MODULE_INFO() says the same on both.
 */
MODULE_INFO(import_ns, "DMA_BUF");
