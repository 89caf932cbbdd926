/*
 * pumpwatch retain guard: a Mosquitto 2.0 broker plugin (plugin API version 5) that refuses
 * a retained PUBLISH unless its topic matches one of the filters it is given.
 *
 * Why: Mosquitto's ACLs (acl_file and the dynamic-security plugin alike) see whether a
 * client may publish on a topic, never whether it sets the retain flag, so a device that may
 * publish its reports could also leave a retained report on the broker. AWS IoT Core grants
 * iot:RetainPublish separately; this plugin is the same rule on Mosquitto.
 *
 * Theory of operation: Mosquitto asks every plugin's ACL-check callback in the order the
 * plugins are loaded and takes the first answer that is not "defer". This plugin is loaded
 * before the dynamic-security plugin. For a retained write whose topic matches none of the
 * filters it answers "denied" (an MQTT 5 client gets PUBACK 0x87, nothing is stored or
 * delivered) and logs a warning naming the client, the topic and how many it has refused;
 * for everything else it defers, so the dynamic-security plugin still decides whether the
 * client may publish there at all. A filter is an MQTT topic filter in which a level "%u"
 * matches only the client's own username (its certificate CN).
 *
 *   plugin /path/pumpwatch_retain_guard.so
 *   plugin_opt_retain pumpwatch/devices/%u/status pumpwatch/sites/#
 *
 * Written against the plugin ABI of mosquitto_broker.h / mosquitto_plugin.h 2.0 (declared
 * below, so it builds without the headers); it uses no C library: cc -shared -fPIC -nostdlib.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mosquitto;
typedef struct mosquitto_plugin_id_t mosquitto_plugin_id_t;
struct mosquitto_opt {
	char *key;
	char *value;
};
struct mosquitto_evt_acl_check {
	void *future;
	struct mosquitto *client;
	const char *topic;
	const void *payload;
	void *properties;
	int access;
	uint32_t payloadlen;
	uint8_t qos;
	bool retain;
	void *future2[4];
};
typedef int (*pw_callback)(int event, void *event_data, void *userdata);
int mosquitto_callback_register(mosquitto_plugin_id_t *id, int event, pw_callback cb,
		const void *event_data, void *userdata);
int mosquitto_callback_unregister(mosquitto_plugin_id_t *id, int event, pw_callback cb,
		const void *event_data);
const char *mosquitto_client_username(const struct mosquitto *client);
void mosquitto_log_printf(int level, const char *fmt, ...);

#define PW_API_VERSION 5
#define PW_EVT_ACL_CHECK 2
#define PW_ACL_WRITE 0x02
#define PW_ERR_SUCCESS 0
#define PW_ERR_INVAL 3
#define PW_ERR_ACL_DENIED 12
#define PW_ERR_PLUGIN_DEFER 17
#define PW_LOG_NOTICE 0x02
#define PW_LOG_WARNING 0x04
#define PW_LOG_ERR 0x08

#define MAX_FILTERS 32
static char filter_buf[4096];
static const char *filters[MAX_FILTERS];
static int n_filters;
static unsigned long refused;
static mosquitto_plugin_id_t *plugin_id;

static bool eq(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

/* Does topic level [t, t_end) equal the NUL-terminated s? */
static bool level_is(const char *t, const char *t_end, const char *s)
{
	while (t < t_end && *s && *t == *s) {
		t++;
		s++;
	}
	return t == t_end && *s == '\0';
}

/* MQTT filter matching, with "%u" as a level that matches only `user`. */
static bool matches(const char *f, const char *t, const char *user)
{
	for (;;) {
		const char *f_end = f, *t_end = t;
		while (*f_end && *f_end != '/')
			f_end++;
		if (f_end - f == 1 && *f == '#')
			return true;
		while (*t_end && *t_end != '/')
			t_end++;
		if (f_end - f == 2 && f[0] == '%' && f[1] == 'u') {
			if (user == NULL || !level_is(t, t_end, user))
				return false;
		} else if (!(f_end - f == 1 && *f == '+')) {
			if (f_end - f != t_end - t)
				return false;
			for (const char *a = f, *b = t; a < f_end; a++, b++)
				if (*a != *b)
					return false;
		}
		if (*f_end == '\0' || *t_end == '\0') {
			/* "a/#" also matches "a" */
			return *f_end == '\0' ? *t_end == '\0'
				: (f_end[1] == '#' && f_end[2] == '\0');
		}
		f = f_end + 1;
		t = t_end + 1;
	}
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ev = event_data;
	(void)event;
	(void)userdata;
	if (ev->access != PW_ACL_WRITE || !ev->retain || ev->topic == NULL)
		return PW_ERR_PLUGIN_DEFER;
	const char *user = mosquitto_client_username(ev->client);
	for (int i = 0; i < n_filters; i++)
		if (matches(filters[i], ev->topic, user))
			return PW_ERR_PLUGIN_DEFER; /* the role's ACLs decide */
	refused++;
	mosquitto_log_printf(PW_LOG_WARNING,
		"pumpwatch retain guard: refused a retained publish by %s on %s (%lu refused)",
		user ? user : "(no username)", ev->topic, refused);
	return PW_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++)
		if (supported_versions[i] == PW_API_VERSION)
			return PW_API_VERSION;
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	size_t used = 0;
	(void)userdata;
	n_filters = 0;
	for (int i = 0; i < option_count; i++) {
		if (!eq(options[i].key, "retain"))
			continue;
		for (const char *v = options[i].value; *v;) {
			while (*v == ' ')
				v++;
			if (!*v)
				break;
			if (n_filters == MAX_FILTERS)
				goto too_many;
			filters[n_filters++] = &filter_buf[used];
			while (*v && *v != ' ') {
				if (used + 2 > sizeof filter_buf)
					goto too_many;
				filter_buf[used++] = *v++;
			}
			filter_buf[used++] = '\0';
		}
	}
	if (n_filters == 0) {
		mosquitto_log_printf(PW_LOG_ERR,
			"pumpwatch retain guard: plugin_opt_retain names no topic filter");
		return PW_ERR_INVAL;
	}
	plugin_id = identifier;
	mosquitto_log_printf(PW_LOG_NOTICE,
		"pumpwatch retain guard: retained publishes only on %d filter(s)", n_filters);
	return mosquitto_callback_register(plugin_id, PW_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
too_many:
	mosquitto_log_printf(PW_LOG_ERR, "pumpwatch retain guard: too many or too long filters");
	return PW_ERR_INVAL;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, PW_EVT_ACL_CHECK, on_acl_check, NULL);
}
