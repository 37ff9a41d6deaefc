// Chinese and English labels. The org data (names of units and people) is
// Chinese and is shown as it is; labels follow the toggle, which is kept in
// localStorage. `data-i18n="key"` elements are relabelled by applyI18n.

const ZH = {
  'app.title': '指挥台', 'lang.other': 'English', 'audio.enable': '点击启用声音',
  'signin.name': '账号', 'signin.password': '密码', 'signin.submit': '登录', 'signout': '退出',
  'signin.wrong': '账号或密码错误', 'signin.throttled': '尝试过多，请稍后再试', 'signin.failed': '登录失败',
  'signin.expired': '会话已过期，请重新登录',
  'state.signed-out': '未登录', 'state.connecting': '连接中', 'state.online': '在线', 'state.offline': '离线，重连中',
  'close.revoked': '本席位已被吊销，请联系管理员', 'close.replaced': '本席位已在其他窗口登录',
  'keys.hint': '空格：讲话 · Alt+1..6：切换页签 · Esc：静音警报 · ↑↓：选组 · M：监听',
  'groups.title': '通话组', 'groups.duckNote': '多组同时有声时，扫描优先级最高的组全音量播放，其余压低至 15%；紧急呼叫最优先。',
  'groups.monitor': '监听', 'groups.volume': '音量', 'groups.mute': '静音', 'groups.unmute': '取消静音',
  'groups.priority': '扫描优先级（1 最高）', 'groups.prioShort': '优先', 'groups.prioUp': '提高优先级', 'groups.prioDown': '降低优先级',
  'groups.online': '人在线', 'groups.volShort': '音量', 'tree.talking': '讲话中', 'inbox.arrive': '已到场', 'groups.joined': '已加入', 'groups.listenOnly': '仅收听', 'groups.joining': '加入中…', 'groups.ducked': '已压低',
  'groups.removed': '已被移出此组', 'groups.tooMany': '最多监听 64 个组',
  'ptt.target': '讲话对象', 'ptt.button': '按住讲话', 'ptt.space': '（按住空格）', 'ptt.mic': '话筒', 'ptt.emergency': '紧急呼叫（抢占所有人）',
  'ptt.offline': '未连接', 'ptt.notJoined': '请先监听（加入）此组', 'ptt.noMic': '无法打开话筒',
  'floor.idle': '空闲', 'floor.taken': '正在讲话', 'floor.granted': '已获话权，请讲话', 'floor.queued': '排队中，第',
  'floor.denied': '话权被拒', 'floor.revoked': '话权被收回', 'floor.requesting': '申请话权…', 'floor.t2': '即将超时',
  'deny.1': '他人正在讲话，无法排队', 'deny.2': '内部错误', 'deny.3': '无人收听', 'deny.5': '此组仅可收听',
  'deny.6': '排队已满', 'deny.100': '未加入此组', 'deny.101': '无权发起紧急呼叫', 'deny.255': '其他原因',
  'revoke.2': '讲话超时', 'revoke.3': '无权限', 'revoke.4': '被更高优先级抢占', 'revoke.255': '其他原因',
  'err.network': '网络错误', 'err.timeout': '网关无应答',
  'err.10': '组不存在', 'err.11': '无权加入此组', 'err.12': '未加入此组', 'err.13': '已达监听上限（64 组）',
  'err.20': '预警内容无效', 'err.21': '目标超出管辖范围', 'err.22': '预警不存在', 'err.24': '回执与之前矛盾',
  'err.25': '附件无效', 'err.26': '附件不存在', 'err.27': '不是演练', 'err.28': '操作过于频繁，请稍后',
  'err.29': '超出限额，请稍后', 'err.500': '网关内部错误', 'err.507': '网关磁盘已满，未保存！请改用电台或电话',
  'map.hint': '点击地图选择地点', 'map.point': '已选地点', 'map.none': '暂无位置信息',
  'tree.title': '单元与成员', 'tree.name': '名称', 'tree.presence': '状态', 'tree.role': '角色', 'tree.kind': '终端',
  'tree.position': '位置时间', 'tree.link': '链路', 'tree.select': '选择', 'tree.online': '在线', 'tree.offline': '离线',
  'tree.onlineCount': '在线',
  'nodeKind.city': '市局', 'nodeKind.district': '分局', 'nodeKind.police_station': '派出所', 'nodeKind.station': '共治站', 'nodeKind.unit': '共治单元',
  'role.police': '民警', 'role.auxiliary_police': '辅警', 'role.security_guard': '保安员', 'role.staff': '工作人员',
  'role.volunteer': '志愿者', 'role.dispatcher': '指挥员',
  'tkind.handheld': '对讲机', 'tkind.screen_terminal': '可视终端', 'tkind.phone_app': '手机应用', 'tkind.console': '指挥台',
  'tab.dispatch': '派单', 'tab.receipts': '回执', 'tab.inbox': '上报', 'tab.drills': '演练', 'tab.history': '历史', 'tab.log': '日志',
  'kind.1': '派单', 'kind.2': '通知', 'kind.3': '预警', 'kind.4': '拉动演练', 'kind.5': 'SOS 紧急求助', 'kind.6': '工作上报', 'kind.7': '线索',
  'd.kind': '类型', 'd.priority': '优先级', 'd.ttl': '有效期', 'd.title': '标题', 'd.text': '内容', 'd.to': '发送对象',
  'd.targetType': '接收范围', 'd.node': '节点', 'd.roles': '角色筛选（不选为全部）：', 'd.members': '成员（在表格中勾选，或输入编号）',
  'd.radius': '半径（米）', 'd.location': '地点', 'd.useLocation': '附带地图上选的地点', 'd.lat': '纬度', 'd.lon': '经度',
  'd.address': '地址', 'd.photos': '照片（最多 8 张，每张不超过 4 MiB）', 'd.send': '发送',
  'd.needTitle': '请填写标题', 'd.titleLong': '标题过长', 'd.needMembers': '请选择成员', 'd.tooManyMembers': '最多 1024 名成员',
  'd.needPoint': '请先在地图上选择地点', 'd.badNearest': 'K 为 1–100，半径为 1–50000 米', 'd.badLocation': '经纬度无效',
  'd.tooBig': '超过 4 MiB', 'd.uploading': '上传照片', 'd.sending': '发送中…', 'd.sent': '已送达网关', 'd.recipients': '名接收人',
  'target.group': '单元/节点（本级成员）', 'target.subtree': '节点及其下属全部', 'target.terminals': '指定成员', 'target.nearest': '地图地点附近最近的 K 人',
  'target.groupShort': '发往', 'target.subtreeShort': '发往全部', 'target.membersShort': '名成员', 'target.nearestShort': '就近',
  'boards.none': '尚未发送', 'boards.moreUnits': '个单元未展开', 'groups.filter': '查找通话组（名称或编号）', 'boards.total': '共',
  'rc.0': '待送达', 'rc.1': '已送达', 'rc.2': '已读', 'rc.3': '已接单', 'rc.4': '已拒绝', 'rc.5': '已到场', 'rc.6': '已处置',
  'rc.expired': '已过期', 'rc.stored': '已存储，上线后送达',
  'inbox.none': '暂无上报', 'inbox.accept': '接收', 'inbox.resolve': '已处理', 'inbox.answer': '回复', 'inbox.answerHint': '回复内容',
  'inbox.answered': '已回复', 'inbox.fetch': '获取照片', 'inbox.photo': '照片', 'inbox.re': '回复',
  'sos.cancel': '解除 SOS', 'sos.cancelled': '已解除', 'sos.cancelledBy': '解除人', 'sos.silence': '静音警报', 'sos.noPosition': '无位置',
  'drill.targetType': '参演单元', 'drill.subtree': '某节点下全部单元', 'drill.units': '选定单元', 'drill.launch': '发起 1-3-8 拉动演练',
  'drill.defaultTitle': '拉动演练', 'drill.needUnits': '请选择单元', 'drill.noMembers': '所选单元没有成员',
  'drill.waiting': '等待演练报告…', 'drill.badReport': '报告格式错误', 'drill.live': '实时刷新', 'drill.csv': '导出 CSV',
  'drill.unit': '单元', 'drill.unitsMembers': '单元/人数', 'drill.receipt': '首个回执', 'drill.accept': '首个接单', 'drill.arrive': '首个到场',
  'drill.median': '中位', 'drill.generated': '生成于',
  'drill.level.unit': '单元', 'drill.level.co_station': '共治站合计', 'drill.level.police_station': '派出所合计', 'drill.level.total': '总计',
  'hist.group': '通话组', 'hist.load': '查询', 'hist.none': '无记录', 'hist.time': '时间', 'hist.speaker': '讲话人',
  'hist.class': '类别', 'hist.length': '时长', 'hist.play': '播放', 'hist.noRec': '无录音',
  'class.0': '普通', 'class.1': '紧急危险', 'class.2': '紧急', 'class.normal': '普通', 'class.imminent_peril': '紧急危险', 'class.emergency': '紧急',
};

const EN = {
  'app.title': 'Command console', 'lang.other': '中文', 'audio.enable': 'Click to enable sound',
  'signin.name': 'Name', 'signin.password': 'Password', 'signin.submit': 'Sign in', 'signout': 'Sign out',
  'signin.wrong': 'Wrong name or password', 'signin.throttled': 'Too many attempts, try again later', 'signin.failed': 'Sign-in failed',
  'signin.expired': 'Session expired, please sign in again',
  'state.signed-out': 'signed out', 'state.connecting': 'connecting', 'state.online': 'online', 'state.offline': 'offline, reconnecting',
  'close.revoked': 'This console was revoked; contact the administrator', 'close.replaced': 'This console was opened in another window',
  'keys.hint': 'Space: talk · Alt+1..6: tabs · Esc: silence alarm · ↑↓: group · M: monitor',
  'groups.title': 'Talk groups', 'groups.duckNote': 'Several groups at once: the highest scan priority plays at full volume, the others are ducked to 15%; emergencies first.',
  'groups.monitor': 'monitor', 'groups.volume': 'volume', 'groups.mute': 'Mute', 'groups.unmute': 'Unmute',
  'groups.priority': 'scan priority (1 = highest)', 'groups.prioShort': 'prio', 'groups.prioUp': 'raise priority', 'groups.prioDown': 'lower priority',
  'groups.online': 'online', 'groups.volShort': 'vol', 'tree.talking': 'talking', 'inbox.arrive': 'Arrived', 'groups.joined': 'joined', 'groups.listenOnly': 'listen only', 'groups.joining': 'joining…', 'groups.ducked': 'ducked',
  'groups.removed': 'removed from this group', 'groups.tooMany': 'at most 64 groups can be monitored',
  'ptt.target': 'Talk to', 'ptt.button': 'Push to talk', 'ptt.space': '(hold Space)', 'ptt.mic': 'Mic', 'ptt.emergency': 'Emergency call (pre-empts everyone)',
  'ptt.offline': 'not connected', 'ptt.notJoined': 'monitor (join) this group first', 'ptt.noMic': 'microphone unavailable',
  'floor.idle': 'idle', 'floor.taken': 'talking', 'floor.granted': 'floor granted, talk now', 'floor.queued': 'queued, position',
  'floor.denied': 'floor denied', 'floor.revoked': 'floor revoked', 'floor.requesting': 'requesting the floor…', 'floor.t2': 'time almost up',
  'deny.1': 'someone else talks and the request cannot be queued', 'deny.2': 'internal error', 'deny.3': 'nobody would hear',
  'deny.5': 'listen only in this group', 'deny.6': 'queue full', 'deny.100': 'not in this group', 'deny.101': 'emergency class not allowed', 'deny.255': 'other',
  'revoke.2': 'talked too long', 'revoke.3': 'no permission', 'revoke.4': 'pre-empted by a higher priority', 'revoke.255': 'other',
  'err.network': 'network error', 'err.timeout': 'no answer from the gateway',
  'err.10': 'no such group', 'err.11': 'not allowed in this group', 'err.12': 'not in this group', 'err.13': 'group limit (64) reached',
  'err.20': 'invalid alert', 'err.21': 'target outside your command', 'err.22': 'unknown alert', 'err.24': 'receipt contradicts an earlier one',
  'err.25': 'invalid attachment', 'err.26': 'unknown attachment', 'err.27': 'not a drill', 'err.28': 'busy, retry later',
  'err.29': 'over a limit, retry later', 'err.500': 'gateway failure', 'err.507': 'gateway disk full, NOT stored: use radio or telephone',
  'map.hint': 'Click the map to choose a point', 'map.point': 'Point', 'map.none': 'no positions yet',
  'tree.title': 'Units and members', 'tree.name': 'Name', 'tree.presence': 'Presence', 'tree.role': 'Role', 'tree.kind': 'Terminal',
  'tree.position': 'Position age', 'tree.link': 'Link', 'tree.select': 'Select', 'tree.online': 'online', 'tree.offline': 'offline',
  'tree.onlineCount': 'online',
  'nodeKind.city': 'city', 'nodeKind.district': 'district', 'nodeKind.police_station': 'police station', 'nodeKind.station': 'co-governance station', 'nodeKind.unit': 'unit',
  'role.police': 'police', 'role.auxiliary_police': 'auxiliary police', 'role.security_guard': 'security guard', 'role.staff': 'staff',
  'role.volunteer': 'volunteer', 'role.dispatcher': 'dispatcher',
  'tkind.handheld': 'handheld', 'tkind.screen_terminal': 'screen terminal', 'tkind.phone_app': 'phone app', 'tkind.console': 'console',
  'tab.dispatch': 'Dispatch', 'tab.receipts': 'Receipts', 'tab.inbox': 'Inbox', 'tab.drills': 'Drills', 'tab.history': 'History', 'tab.log': 'Log',
  'kind.1': 'Dispatch', 'kind.2': 'Notice', 'kind.3': 'Warning', 'kind.4': 'Drill', 'kind.5': 'SOS', 'kind.6': 'Work report', 'kind.7': 'Clue',
  'd.kind': 'Kind', 'd.priority': 'Priority', 'd.ttl': 'Valid for', 'd.title': 'Title', 'd.text': 'Text', 'd.to': 'To',
  'd.targetType': 'Recipients', 'd.node': 'Node', 'd.roles': 'Roles (none = everyone): ', 'd.members': 'Members (tick them in the table, or type ids)',
  'd.radius': 'Radius (m)', 'd.location': 'Location', 'd.useLocation': 'Attach the map point', 'd.lat': 'Latitude', 'd.lon': 'Longitude',
  'd.address': 'Address', 'd.photos': 'Photos (up to 8, 4 MiB each)', 'd.send': 'Send',
  'd.needTitle': 'a title is needed', 'd.titleLong': 'title too long', 'd.needMembers': 'choose members', 'd.tooManyMembers': 'at most 1024 members',
  'd.needPoint': 'choose a point on the map first', 'd.badNearest': 'K is 1-100 and the radius 1-50000 m', 'd.badLocation': 'invalid latitude/longitude',
  'd.tooBig': 'over 4 MiB', 'd.uploading': 'uploading photo', 'd.sending': 'sending…', 'd.sent': 'stored by the gateway', 'd.recipients': 'recipients',
  'target.group': 'A unit / node (its own members)', 'target.subtree': 'A node and everything under it', 'target.terminals': 'Listed members', 'target.nearest': 'K nearest to the map point',
  'target.groupShort': 'to', 'target.subtreeShort': 'to all under', 'target.membersShort': 'members', 'target.nearestShort': 'nearest',
  'boards.none': 'nothing sent yet', 'boards.moreUnits': 'more units not shown', 'groups.filter': 'Find a group (name or id)', 'boards.total': 'total',
  'rc.0': 'pending', 'rc.1': 'delivered', 'rc.2': 'read', 'rc.3': 'accepted', 'rc.4': 'rejected', 'rc.5': 'arrived', 'rc.6': 'resolved',
  'rc.expired': 'expired', 'rc.stored': 'stored, delivered when online',
  'inbox.none': 'no reports', 'inbox.accept': 'Accept', 'inbox.resolve': 'Resolved', 'inbox.answer': 'Answer', 'inbox.answerHint': 'answer',
  'inbox.answered': 'answer sent', 'inbox.fetch': 'Fetch photo', 'inbox.photo': 'photo', 'inbox.re': 'Re',
  'sos.cancel': 'Cancel SOS', 'sos.cancelled': 'cancelled', 'sos.cancelledBy': 'cancelled by', 'sos.silence': 'Silence alarm', 'sos.noPosition': 'no position',
  'drill.targetType': 'Units', 'drill.subtree': 'Every unit under a node', 'drill.units': 'Chosen units', 'drill.launch': 'Launch 1-3-8 drill',
  'drill.defaultTitle': 'Drill', 'drill.needUnits': 'choose units', 'drill.noMembers': 'the chosen units have no members',
  'drill.waiting': 'waiting for the report…', 'drill.badReport': 'bad report', 'drill.live': 'live', 'drill.csv': 'Export CSV',
  'drill.unit': 'Unit', 'drill.unitsMembers': 'Units/members', 'drill.receipt': 'First receipt', 'drill.accept': 'First accept', 'drill.arrive': 'First arrival',
  'drill.median': 'median', 'drill.generated': 'generated',
  'drill.level.unit': 'unit', 'drill.level.co_station': 'station total', 'drill.level.police_station': 'police station total', 'drill.level.total': 'total',
  'hist.group': 'Group', 'hist.load': 'Load', 'hist.none': 'no bursts', 'hist.time': 'Time', 'hist.speaker': 'Speaker',
  'hist.class': 'Class', 'hist.length': 'Length', 'hist.play': 'Play', 'hist.noRec': 'not recorded',
  'class.0': 'normal', 'class.1': 'imminent peril', 'class.2': 'emergency', 'class.normal': 'normal', 'class.imminent_peril': 'imminent peril', 'class.emergency': 'emergency',
};

export const DICTS = { zh: ZH, en: EN };

let current = 'zh';
try {
  const saved = globalThis.localStorage?.getItem('pttConsole:lang');
  if (saved === 'en' || saved === 'zh') current = saved;
} catch { /* no storage */ }

export function lang() { return current; }

export function setLang(l) {
  current = l === 'en' ? 'en' : 'zh';
  try { globalThis.localStorage?.setItem('pttConsole:lang', current); } catch { /* no storage */ }
  if (globalThis.document) document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
}

/** The label for `key` in the current language (the key itself when unknown). */
export function t(key) {
  return DICTS[current][key] ?? DICTS.en[key] ?? key;
}

/** Relabels every `data-i18n` element under `root`. */
export function applyI18n(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  if (root.documentElement) root.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
}
