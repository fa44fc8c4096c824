"""Writes `train.csv`, the classifier's training set, from the templates below (seeded, so the file is reproducible).

Run `python -m moderation.data.make_train` after editing a template; the classifier's cache key and version follow
the CSV's hash. The held-out set (`heldout.csv`) is written by hand and never generated from these templates, so
the evaluation does not reward memorised phrasings. Some rows get adversarial spellings (leetspeak, look-alike
letters, zero-width characters, spacing) because real evaders use them; `moderation.textnorm.skeleton` folds
most of them back before the model sees the text.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

CATEGORIES = ("offensive", "harassment", "sexual", "self_harm", "spam")
OUT = Path(__file__).with_name("train.csv")

SLOTS = {
    "subject": ["math", "history", "bio", "chem", "physics", "english", "spanish", "geography", "econ", "art",
                "civics", "french", "algebra", "geometry", "computer science", "health", "music theory"],
    "thing": ["worksheet", "essay", "lab report", "quiz", "homework", "project", "reading", "problem set",
              "presentation", "group project", "study guide", "test", "assignment", "slides"],
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "tomorrow", "tonight", "next week",
            "the weekend"],
    "num": ["2", "3", "4", "5", "7", "12", "14", "21", "6b", "9"],
    "name": ["jake", "maria", "sam", "alex", "priya", "tom", "lena", "omar", "chris", "mia", "noah", "zoe",
             "ethan", "ava", "luis", "kai", "jordan", "emma", "dev", "sara"],
    "game": ["valorant", "minecraft", "fortnite", "elden ring", "league", "apex", "chess", "rocket league",
             "the new zelda", "cs2", "overwatch", "speedrun"],
    "insult": ["idiot", "loser", "moron", "clown", "dumbass", "freak", "pathetic loser", "waste of space",
               "retard", "ugly troll", "fat pig", "piece of shit", "brainless idiot", "worthless loser", "creep",
               "bitch", "asshole", "dickhead", "crybaby", "weirdo"],
    "swear": ["fuck", "shit", "fucking", "damn it", "bullshit", "wtf", "fck", "shitty", "motherfucking",
              "goddamn"],
    "site": ["bit.ly/3xFr33", "free-robux.gg", "tinyurl.com/claimnow", "cheapessays.net", "gift-card-win.com",
             "cutt.ly/vbucks", "discord.gg/freenitro", "crypto-x2.io", "www.followboost.biz", "t.me/cashapp_flip",
             "getpaid-fast.xyz", "skins4free.ru"],
    "handle": ["@xx_gamer_xx", "@lilybeauty22", "@cryptoking", "@promo.daily", "@getfamous", "@b0ostme",
               "@teen_model_x", "@dealsdealsdeals"],
    "prize": ["free robux", "free vbucks", "a $500 gift card", "an iphone 16", "free nitro", "10k followers",
              "a free ps5", "free skins", "$1000 in bitcoin"],
    # Meeting places, school events and clock times: ordinary logistics, and the setting of some threats.
    "place": ["the library", "room 12", "room 204", "the bus stop", "the cafeteria", "the gym", "the front gate",
              "the main entrance", "the parking lot", "my locker", "the lockers", "the field", "the band room",
              "the front office", "the bike racks", "the science lab", "the computer lab", "the courtyard",
              "the nurse's office", "the auditorium", "the corner store", "the train station"],
    "event": ["school", "class", "practice", "lunch", "rehearsal", "the game", "band", "soccer practice",
              "drama club", "detention", "the assembly", "recess", "first period", "homeroom", "the test",
              "the field trip", "choir", "chess club", "the meeting", "track"],
    "time": ["3:15", "8 am", "noon", "7:45", "2:30", "4", "lunchtime", "the bell", "half past three", "10 past 8"],
    "sport": ["basketball", "soccer", "volleyball", "football", "hockey", "baseball", "tennis", "badminton",
              "dodgeball", "netball"],
}


def fill(template: str, rng: random.Random) -> str:
    out = template
    for key, values in SLOTS.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rng.choice(values), 1)
    return out


# Benign, including hard negatives: violent or sexual words in school or game context, links teachers post.
BENIGN = [
    "did anyone finish the {subject} {thing}?", "when is the {thing} due", "is the {thing} due {day}?",
    "can someone explain question {num} on the {thing}", "what page are we on", "i think it's page {num}",
    "thanks {name}!", "good morning everyone", "hi miss, can you hear us?", "the audio cut out for a sec",
    "can you share your screen again", "i'm back, my wifi dropped", "sorry i'm late, bus was slow",
    "is {name} presenting next?", "my mic isn't working", "can we get an extension on the {thing}",
    "this {thing} is killing me", "this {subject} {thing} is going to be the death of me",
    "i could die laughing at that meme", "i could die laughing", "i'm going to die laughing",
    "{name} i nearly died laughing", "i literally died 😂",
    "i'd die of embarrassment", "i'm dying 😂", "lmao i'm dead", "bro i'm dead 💀",
    "sex education chapter {num} is on the test", "we covered sexual reproduction in plants today",
    "the {subject} test covers puberty and the reproductive system",
    "click the link in the syllabus for the reading", "the zoom link is in the class calendar",
    "follow the instructions on page {num}", "subscribe to the class calendar so you get reminders",
    "check the link the teacher posted in announcements", "the rubric link is pinned at the top",
    "that play was sick", "that was a sick clip", "{name} is cracked at {game}", "that shot was insane",
    "he killed it on the presentation", "you killed that solo", "the boss fight killed me like 20 times",
    "shoot, i forgot my calculator", "shoot the zombies first then grab the loot", "headshot! gg",
    "the first world war killed millions of soldiers", "the atomic bomb was dropped on hiroshima in 1945",
    "the assassination of franz ferdinand started ww1", "the holocaust was the genocide of six million jews",
    "in the civil war more americans died than in any other war", "the battle of the somme was a massacre",
    "napoleon invaded russia and lost most of his army", "the romans crucified spartacus' army",
    "hamlet kills polonius by accident in act 3", "romeo kills himself when he thinks juliet is dead",
    "in the novel the character attempts suicide, what does that show", "the poem is about grief and death",
    "suicide prevention week starts {day}, the counselor is in room {num}",
    "the health unit covers self harm warning signs", "breast cancer awareness month is october",
    "the cell dies during apoptosis", "predators kill their prey in the food chain",
    "we're dissecting frogs {day}", "gg well played", "W stream", "lets gooo", "first!", "hi from brazil 🇧🇷",
    "what game is this?", "clip that", "bro is cooking", "pog", "KEKW", "lol", "that's hilarious",
    "love this stream", "what's your sens?", "play {game} next", "how long have you been streaming",
    "that was so close", "chat is so fast today", "good luck on the ranked match", "ez clap",
    "this song slaps", "the music is too loud", "can you turn the volume up", "rip", "F in the chat",
    "nooo he almost had it", "one more game!", "happy birthday {name}!", "congrats on 1k followers!",
    "you should follow the rules in the pinned message", "follow the lecture notes from {day}",
    "free period tomorrow?", "free pizza at the club meeting {day}", "the school store has free pencils",
    "i hate mondays", "i hate this {thing} so much", "ugh {subject} is so hard", "i'm so tired", "same",
    "i'm so stressed about the {thing}", "i failed the quiz, i want to cry", "i'm dead tired",
    "my brain is fried", "that question was brutal", "the {subject} test destroyed me",
    "i'm gonna kill my brother if he eats my snacks again lol", "my mom is going to kill me for being late",
    "we should attack the problem from a different angle", "the virus attacks the immune system",
    "the hot dogs at lunch were fire", "damn that's a lot of homework",
    "hell yeah we have no school {day}", "what the heck was that", "crap i left my book at home",
    "can i go to the bathroom", "who's in my group for the {thing}?", "can i work with {name}?",
    "{name} you're muted", "{name} you dropped this 👑", "{name} great job on the {thing}",
    "{name} can you send me the notes", "{name} you're so funny lol", "{name} stop spamming emojis 😂",
    "does anyone have a pencil", "the answer is {num}", "is it {num} or {num}?", "can you repeat that?",
    "i disagree with {name}'s point about the war", "the bill of rights protects free speech",
    "how do you balance this equation", "what's the difference between mitosis and meiosis",
    "the teacher said we can use notes", "good night everyone, see you {day}", "thank you for the class!",
    "i'm so done with this unit", "i'm gonna die if this test isn't curved", "kill the lights please",
    "the hunger games has a lot of killing", "the bomb cyclone hit the east coast",
    "these cookies are a killer recipe", "my sister is a pain but i love her", "you're a lifesaver {name}",
    "shut up that's amazing", "no way, shut up 😂", "stop it, you're killing me 😂",
    "my cat is an idiot, he fell off the couch", "i'm such an idiot i forgot my login",
    "i'm the worst at {game}", "i suck at {subject}", "this wifi sucks", "that movie sucked",
    "who won the war of 1812?", "the nazis invaded poland in 1939", "genghis khan slaughtered whole cities",
    "the slaves fought for their freedom in the haitian revolution", "lincoln was shot at ford's theatre",
    "macbeth murders the king in act 2", "of mice and men ends with george shooting lennie",
    "the lion kills the zebra in the documentary", "hiv is a sexually transmitted infection",
    "consent is part of the health curriculum", "the body systems quiz includes the genitals diagram",
    "gender and sexuality unit starts {day}", "pregnancy and birth is chapter {num}",
    "please click submit before the timer ends", "the form link expires at midnight",
    "sign up for the field trip at the link on the class page", "don't click links from strangers",
    "is this a scam? someone dm'd me a link", "report spam to the teacher",
    "follow along with the slides", "i'll share the link to the doc in a sec", "like and subscribe lol jk",
    "streamer pls follow back my friend, she's been watching since day one 🥺", "hydrate chat",
    "the chat is toxic today, be nice guys", "please don't bully {name}", "that's not nice, stop",
    "mods please ban the spammer", "block and report them", "are you ok {name}? dm me if you need to talk",
    "if you're struggling, the counselor is really nice", "i'm here for you {name}", "sending hugs ❤️",
    "that villain deserved to die", "i'd die for this team honestly", "this level is suicide lol",
    "dying my hair blue this weekend", "the plant is dying because i forgot to water it",
    "i'm starving, lunch is in 5", "you're insane at {game} {name}", "{name} is a beast at {subject}",
    "my dog is such a good boy", "i'm dead serious, the test is on {day}", "i nearly died on the bus",
    "that was a killer workout in gym", "gym class murdered my legs", "sick beat", "that's wild",
    "we need to beat {name}'s team", "i'm gonna crush this test", "destroy them in the next round",
    "bomb the objective b site", "rush b", "nade them", "nice kill!", "triple kill 🔥", "clutch!",
    "anyone want to study for {subject} after school", "my sister has the same {subject} teacher",
    "what's the homework for {day}?", "i left early, what did i miss", "can someone post the notes",
    "the projector is broken again", "the bell rang early lol", "our school won the game",
    "thanks for streaming ❤️", "see you tomorrow chat", "what's the name of this song",
    "how old are you? (for the school project survey)", "is the stream lagging for anyone else",
    # Second person and first person without harm: the model must not learn "you" or "i want" as a signal.
    "what mouse do you use?", "what's your favorite {game} character", "do you ever play {game} with viewers",
    "you're doing great {name}", "you can do it!", "you're so good at this", "you deserve the win",
    "are you streaming {day}?", "what server are you on", "how did you get so good at {game}",
    "you were right about question {num}", "don't worry about it, we all forget", "it's fine, no stress",
    "you're welcome!", "thank you so much {name}", "you look happy today {name}", "have you finished the {thing}?",
    "did you get my message {name}?", "i'll send you the notes {day}", "you left your jacket in {subject}",
    "i want to get better at {subject}", "i want to learn {game} this summer", "i want pizza for lunch",
    "i finally finished the {thing}!", "i'm going to bed, night all", "i'm tired, long day", "i'm so happy rn",
    "i want to join the {subject} club", "i think i'm going to quit piano", "i'm done for today, bye",
    "i wrote about the ocean for my {thing}", "i can't wait for summer", "i love this class",
    "i'm going to study all weekend", "i don't get question {num}", "i got an A on the {thing}!!",
    "i'm so bored", "i want to sleep for a week after this {thing}", "i'm going to scream if the wifi drops again",
]

# Ordinary class chat the model over-flagged ("see you after school" was held as harassment, "meet me after class"
# flagged as sexual, "I hate mondays" half-way to offensive): meeting times and places, mild everyday negativity,
# games and sports talk, school logistics, greetings and emoji (MEETING, EVERYDAY). They have hostile twins below
# (THREATS_AT_PLACES, and the insults in HARASSMENT), so the model learns the threat, not the meeting place.
MEETING = [
    "see you after {event}", "see you after {event}!", "see you at {event}", "see you at {place}",
    "see you {day}", "see you in {subject}", "see you at {time}", "see ya after {event}", "cya after {event}",
    "see you after {event} {name}", "ok see you after {event} then", "see you all {day}, bye",
    "meet me at {place}", "meet me after {event}", "meet me in {place}", "meet me at {place} after {event}",
    "meet me by {place} at {time}", "meet you at {place}?", "let's meet at {place} at {time}",
    "can we meet at {place} after {event}?", "can you meet me at {place} to work on the {thing}?",
    "let's meet after {event} to finish the {thing}", "meet at {place}, the {subject} group is there",
    "wait for me at {place}", "wait for me after {event}", "wait for me, i'm almost at {place}",
    "i'll wait for you at {place}", "i'll wait for you after {event}", "i'm waiting at {place}",
    "i'll be at {place} at {time}", "i'm at {place}, where are you?", "where are you? i'm by {place}",
    "come to {place} after {event}", "come find me at {place}", "i'll be in {place} after {event}",
    "we're all at {place} if you want to join", "save me a seat at {place}", "i'll save you a seat at {event}",
    "walk with me to {place} after {event}?", "can you pick me up from {place} at {time}",
    "my mom is picking me up at {place}", "{event} ends at {time} today", "{event} starts at {time}",
    "{event} is in {place} today", "{event} got moved to {place}", "after {event} i have to go home",
    "i'll come by {place} after {event}", "are you going to {event} {day}?", "running late, meet you at {place}",
]
EVERYDAY = [
    # mild everyday negativity
    "i hate mondays", "i hate {day}", "ugh i hate {day}s", "i hate {subject}", "i hate when the wifi drops",
    "i hate when my pen runs out", "i hate waking up early", "ugh homework", "ugh", "ugh, {subject} homework",
    "so much homework ugh", "this is so dumb", "this is so dumb lol", "that was so dumb", "lol that was so dumb",
    "this {thing} is dumb", "that question was dumb", "the rule is kinda dumb", "dumb mistake, my bad",
    "i made such a dumb mistake on the {thing}", "that was a stupid idea of mine", "stupid printer",
    "this sucks", "{subject} sucks today", "that sucks, sorry", "worst day ever", "today was so long",
    "i'm so done with this {thing}", "i'm annoyed, my laptop died", "my laptop is so slow", "so annoying",
    "that's annoying", "the wifi is trash today", "this {thing} is a nightmare", "i'm bored out of my mind",
    "why is {subject} so hard", "the {thing} was way too long", "i'm never going to finish this {thing}",
    "not again 😩", "why is it always raining", "the cafeteria food was gross", "boring lol",
    # games and sports talk
    "good game everyone", "good game", "good game {name}", "gg everyone", "ggs all", "well played everyone",
    "good game, rematch tomorrow?", "nice shot {name}", "he shot the ball from half court",
    "she shot and scored", "he shot the winning basket", "great shot in {sport} today",
    "we killed it today", "we killed it at the {sport} game", "you killed it out there",
    "we crushed them in {sport}", "we destroyed the other team", "they destroyed us lol", "we got crushed",
    "we lost but it was fun", "we won the {sport} match!", "our {sport} team won {day}", "i scored a goal!",
    "the ref was blind lol", "i'm going to beat you at {game} next time", "i'll beat you at chess tomorrow",
    "rematch, i'll win this time", "you beat me fair and square", "beat my high score", "nice save!",
    "{sport} tryouts are {day}", "who's on the {sport} team this year", "the {sport} game starts at {time}",
    "that was a close game", "what a game!", "we need a striker for the {sport} team", "they smashed it",
    "i'm going to attack from the left side", "we're so dead if we lose this round lol", "clutch play {name}",
    # school logistics
    "the bus is late again", "my bus is late", "{event} is cancelled {day}", "bring your permission slip",
    "the field trip is {day}", "room change, we're in {place}", "we have a sub {day}", "lunch is at {time}",
    "where's the {subject} classroom", "don't forget your gym clothes", "don't forget the {thing} is due {day}",
    "is the library open after {event}?", "the nurse's office is next to {place}", "the bell rings at {time}",
    "is there {event} {day}?", "the office needs the forms by {day}", "my locker is stuck again",
    "i left my calculator in {place}", "who has a spare pencil", "can i borrow a charger", "is school open {day}",
    "picture day is {day}", "early dismissal {day}", "class is in {place} today", "the {thing} is on page {num}",
    "pick up your {thing} at {place}", "hand in your {thing} at {place}", "get your forms from {place}",
    "bring your {thing} to {place} after {event}", "your {thing} is in {place}", "collect your books at {place}",
    "leave your bags at {place}", "line up at {place} at {time}", "your locker combo is on the sheet",
    # second person, kind or neutral ("you'll" and "your" also open threats)
    "you'll do great on the {thing}", "you'll get it next time", "you'll be fine, don't worry",
    "you'll see, it's easier than it looks", "you'll love {subject} next year", "you'll find it in {place}",
    "you're going to do great {name}", "you're going to love this {game} level", "your {thing} was so good",
    "your drawing is amazing", "nice try {name}", "good try, almost had it", "you almost had it!",
    # greetings and emoji
    "good morning everyone", "good morning 👋", "morning all", "hi everyone", "hi everyone 👋", "hey {name}",
    "hey {name}!", "hello class", "hi miss", "hi sir", "bye everyone", "bye, see you {day}", "bye 👋", "later!",
    "have a good weekend", "have a great weekend everyone 😊", "happy friday", "happy friday 🎉", "good night all",
    "welcome back {name}", "nice to see you all", "see you tomorrow everyone", "thanks everyone", "thanks 🙏",
    "👋", "🙌", "😊", "❤️", "🎉🎉", "👍👍", "🙂", "😂😂", "lol 😂", "yay 🎉", "ok 👍", "omg 😮", "🥳", "💯",
]

# Threats, insults and solicitation set at the same times and places as MEETING: the hostile twins that keep
# recall when the meeting phrases become benign. (harassment) or (harassment, sexual) rows; never offensive.
THREATS_AT_PLACES = [
    "see you after {event}, you're dead", "see you after {event}. you better run", "see you at {place}, loser",
    "see you after {event}, bring your friends, you'll need them", "see you after {event} and you'll regret it",
    "meet me at {place} after {event} so i can beat you up", "meet me at {place}, i'm going to hurt you",
    "meet me after {event} and i'll break your face", "meet me at {place} if you're not a coward",
    "wait for me at {place}, you're getting jumped", "wait till {event} ends, you're getting jumped",
    "i'll be waiting at {place} for you, watch your back", "i'll wait for you at {place} and you'll regret it",
    "you're going to get beat up at {place}", "we're jumping {name} at {place} after {event}",
    "everyone come to {place} at {time} to watch {name} get beat up", "you won't make it home from {event}",
    "after {event} you're getting hurt", "come to {place} alone, i dare you", "i'll catch you at {place}",
    "i'm going to beat you up at {place}", "i'll beat you up after {event}, just wait",
    "wait at {place}, i'll punch you so hard", "see you at {place} after {event}, i'll make you cry",
]
THREATS_AT_PLACES_SEXUAL = [
    "meet me at {place} and take your shirt off", "meet me after {event} and send me nudes first",
    "come to {place} alone and i'll touch you", "after {event} show me your body at {place}",
]

# Strong profanity or vulgarity that targets no one: offensive only.
OFFENSIVE = [
    "this {thing} is fucking impossible", "{swear} i forgot the {thing}", "{swear} this wifi",
    "holy shit that play", "what the fuck was that", "fuck this {subject} {thing}", "this is such bullshit",
    "{swear}, i lost again", "shit shit shit i'm late", "fucking hell the server crashed",
    "this game is fucking rigged", "motherfucker, the lag", "that was fucking sick", "ass {game} update",
    "i'm so fucking tired of {subject}", "this stream is the shit", "fuck yeah we won", "fuckin finally",
    "who the fuck made this {thing}", "this {thing} is shit", "god damn this lag", "pissed off at this {game}",
    "shit's about to go down", "that's fucked up", "well fuck", "oh shit oh shit", "fuckkk", "this is ass",
    "the {subject} teacher gave us a shit ton of homework", "fuck me, i forgot the {thing} again",
    "bullshit call by the ref", "screw this shitty laptop", "this {game} patch is dogshit",
]

# Directed at a person: insults, threats, bullying, exclusion, telling someone to hurt themselves.
# The `offensive` flag is set per row when it also swears.
HARASSMENT = [
    ("you're such a {insult}", None), ("{name} is a {insult}", None), ("shut up {name} you {insult}", None),
    ("nobody likes you {name}", 0), ("everyone in this class hates you", 0), ("just leave, no one wants you here", 0),
    ("you should just disappear", 0), ("go kill yourself", 0), ("kys {name}", 0), ("kill yourself {insult}", None),
    ("i'm going to beat you up after school", 0), ("i know where you live {name}", 0),
    ("watch your back tomorrow", 0), ("i'll make you regret coming to school", 0),
    ("you're so ugly it hurts to look at you", 0), ("{name} smells like garbage lol", 0),
    ("nobody invited you {name}, leave the group", 0), ("you're the reason your parents are sad", 0),
    ("lmao look at {name}'s face, what a {insult}", None), ("go back to where you came from", 0),
    ("you're too stupid for this class", 0), ("why are you even alive", 0), ("drink bleach {name}", 0),
    ("fuck you {name}", 1), ("fuck off {insult}", 1), ("shut the fuck up {name}", 1),
    ("you play like a {insult}, uninstall", None), ("streamer is a {insult}", None),
    ("this streamer is trash and so are you", 0), ("{name} you're a fat {insult}", None),
    ("ratio + you're adopted + nobody cares", 0), ("i'll post your address in chat", 0),
    ("{name} cried in class lmaooo what a baby", 0), ("no one will ever love you {name}", 0),
    ("i hope you die {name}", 0), ("you're worthless, give up", 0), ("die in a fire {name}", 0),
    ("i'm gonna find you and hurt you", 0), ("stupid {insult} can't even read", None),
    ("{name} has no friends, that's why she sits alone", 0), ("you're a joke, {name}", 0),
    ("imagine being as dumb as {name}", 0), ("nobody asked, {insult}", None), ("cry about it {insult}", None),
    ("you should be ashamed of being so ugly", 0), ("we all voted you the weirdest kid in class", 0),
    ("{name} your voice is so annoying, never talk again", 0),
    ("i'm screenshotting this and sending it to everyone", 0),
    ("keep talking and see what happens to you", 0), ("i'll smash your face in", 0), ("get cancer {name}", 0),
    ("you're a disgrace, {insult}", None), ("hey {insult}, nobody wants you on stream", None),
    ("stfu {name}", 1), ("{name} is a fucking {insult}", 1), ("go fuck yourself", 1),
]
VULGAR = re.compile(r"\b(dick|tits|porn|balls|blowjob|horny|ass)\b")
SWEARY_INSULTS = {"dumbass", "piece of shit", "bitch", "asshole", "dickhead", "retard"}

SEXUAL = [
    "send nudes", "send me nudes {name}", "wanna sext?", "show me your boobs", "show me your tits",
    "how big is your dick", "i want to have sex with you", "let's hook up after class ;)", "u a virgin?",
    "i'm so horny rn", "check my onlyfans", "dm me for nsfw pics", "who wants to see my dick",
    "wanna see something naughty? dm me", "i'd smash {name}", "take your shirt off on stream",
    "what color is your underwear", "i want to touch you", "show feet pics", "rate my nudes",
    "porn in my bio", "i watched porn in class lol", "sit on my face", "suck my dick", "lick my balls",
    "give me a blowjob", "send a pic of your body", "i'll pay you for pics", "let's do it in the bathroom",
    "are you wearing anything under that", "your mom is hot, give me her number ;)",
    "wanna see my body?", "let's video call naked", "i'll show you mine if you show me yours",
    "who's down to sext", "send me a pic in the shower", "i'm touching myself watching this",
    "send me a pic of you in a bikini", "i want to kiss you all over",
    "let's fool around at my place, my parents are out",
    "what's your bra size", "i'm hard watching you", "she has a nice rack", "take it all off",
]
# Sexual remarks aimed at someone are also harassment; vulgar ones also offensive.
SEXUAL_AT = [
    ("{name} you're a slut", (1, 1, 1, 0, 0)), ("{name} is a whore", (1, 1, 1, 0, 0)),
    ("you look sexy in that uniform {name}", (0, 1, 1, 0, 0)), ("{name} is such a thot", (1, 1, 1, 0, 0)),
    ("suck my dick {name}", (1, 1, 1, 0, 0)), ("i'm gonna fuck you so hard", (1, 1, 1, 0, 0)),
    ("{name} send nudes or i tell everyone", (0, 1, 1, 0, 0)), ("fucking slut", (1, 1, 1, 0, 0)),
    ("nice tits {name}", (1, 1, 1, 0, 0)), ("show us your ass {name}", (1, 1, 1, 0, 0)),
]

# First person: intent, ideation, methods or ongoing self-harm. Hyperbole ("this test is killing me") is not.
SELF_HARM = [
    "i want to kill myself", "i want to die", "i don't want to be alive anymore", "i'm going to end it tonight",
    "i've been cutting again", "i cut myself last night", "how many pills does it take to die",
    "nobody would care if i died", "i wish i could just not wake up", "i'm thinking about suicide",
    "i have a plan to kill myself", "what's the most painless way to die", "i hurt myself when i'm stressed",
    "i'm going to jump off the bridge", "i wrote my goodbye letter", "i can't do this anymore, i want it to end",
    "everyone would be better off without me", "i burned myself again", "i don't see a reason to live",
    "i'm going to overdose", "i started self harming again", "life isn't worth living",
    "i keep thinking about ending my life", "i'm going to hang myself", "i'm so done with life, goodbye",
    "i want to disappear forever", "i'm scared i'll hurt myself tonight", "i relapsed, i cut again",
    "my wrists are covered in scars", "i took all my mom's pills", "i'm a burden, i should kill myself",
    "i don't want to wake up tomorrow", "i've been starving myself to punish myself", "i want to stop existing",
    "i'm hiding the blades from my mom", "tonight is my last night", "i looked up how to tie a noose",
    "i want to hurt myself so bad right now", "i'm done, nobody will miss me",
    "i tried to kill myself last year and i want to try again",
    "i just want the pain to stop forever", "what's the lethal dose of tylenol", "i hit myself until i bruise",
]
SELF_HARM_SWEAR = [
    "fuck my life, i want to die", "i'm so fucking done, i'm going to kill myself", "i fucking hate myself",
    "i'm a worthless piece of shit, i should die",
]

SPAM = [
    "FREE {prize} at {site}", "get {prize} now!!! {site}", "claim {prize} here: {site}",
    "click here to claim your prize {site}", "follow me on insta {handle}", "follow {handle} for follow back",
    "sub4sub anyone? check my channel", "check out my channel!! link in bio", "earn $500 a day from home {site}",
    "make money fast, dm me", "crypto giveaway! send 0.1 btc get 0.2 back {site}", "cheap essays, dm me",
    "i write essays for $10, dm {handle}", "buy followers cheap {site}", "visit {site} for the best deals",
    "promo code STREAM50 at {site}", "join my discord {site} free giveaways", "{site} {site} {site}",
    "want {prize}? go to {site}", "i made $3000 this week with this trick {site}", "dm me to get rich",
    "selling test answers, dm {handle}", "who wants {prize}? {site}", "limited offer!!! {site}",
    "win {prize} just click {site}", "hot singles in your area {site}", "f4f l4l {handle}",
    "best cheap skins {site} use code FREE", "guys follow {handle} pls", "vote for me at {site} and get {prize}",
    "your account will be banned, verify at {site}", "teacher said to log in here: {site}",
    "🔥🔥 {prize} 🔥🔥 {site}", "GO TO {site} NOW", "double your money in 24h {site}",
    "i'm giving away {prize} to the first 100 people {site}", "need homework done? {handle} is cheap",
    "check my bio for {prize}", "free gift cards!!! {site} !!!", "investment opportunity, 300% returns, dm me",
    "watch my stream instead, link in bio", "follow {handle} follow {handle} follow {handle}",
    "scan the qr on my profile for {prize}", "earn robux by doing surveys at {site}",
    "work from home and earn $200 a day, message me", "i'll do your homework for cash, dm me",
    "want to make easy money? ask me how", "forex trading tips, 10x your savings, dm",
    "you have been chosen to win {prize}!", "congrats winner, claim {prize} in my profile",
    "shop my new merch store, 70% off today only", "cheap {game} accounts for sale, message me",
]
SPAM_SEXUAL = ["hot pics in my bio {handle}", "nudes for sale {site}", "18+ content free at {site}",
               "horny girls waiting at {site}", "see my private pics {site}"]

LEET = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7"}
LOOKALIKE = {"a": "а", "e": "е", "o": "о", "c": "с", "p": "р", "x": "х", "i": "і", "y": "у"}  # Cyrillic


def perturb(text: str, rng: random.Random) -> str:
    """One evasion trick, as a real user would type it."""
    trick = rng.choice(["leet", "lookalike", "zwsp", "upper", "stretch", "spaced"])
    if trick == "leet":
        return "".join(rng.choice(LEET[ch]) if ch in LEET and rng.random() < 0.5 else ch for ch in text)
    if trick == "lookalike":
        return "".join(LOOKALIKE[ch] if ch in LOOKALIKE and rng.random() < 0.6 else ch for ch in text)
    if trick == "zwsp":
        return "".join(ch + "\u200b" if ch.isalpha() and rng.random() < 0.3 else ch for ch in text)
    if trick == "upper":
        return text.upper()
    if trick == "stretch":
        return "".join(ch * 3 if ch in "aeiou" and rng.random() < 0.2 else ch for ch in text)
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = " ".join(words[i])
    return " ".join(words)


PREFIXES = ["", "", "", "lol ", "bro ", "ok ", "{name} ", "honestly ", "guys ", "yo ", "omg ", "ngl ", "wait ",
            "um ", "so ", "hey "]
SUFFIXES = ["", "", "", " lol", " 😂", "!!", " fr", " tbh", " ngl", "?", " 💀", " smh", " lmao", " ...", " 😭",
            " haha", " rn", " bruh"]


def wrap(text: str, rng: random.Random) -> str:
    """Chat filler around a message, so the model learns the message and not its exact edges."""
    return fill(rng.choice(PREFIXES), rng) + text + rng.choice(SUFFIXES)


def rows(rng: random.Random) -> list[tuple[str, tuple[int, ...]]]:
    out: list[tuple[str, tuple[int, ...]]] = []

    def add(templates, labels, n, perturb_rate=0.0):
        for _ in range(n):
            text = wrap(fill(rng.choice(templates), rng), rng)
            if templates is BENIGN and rng.random() < 0.1:
                text += " " + fill(rng.choice(BENIGN), rng)
            if perturb_rate and rng.random() < perturb_rate:
                text = perturb(text, rng)
            out.append((text, labels))

    add(BENIGN, (0, 0, 0, 0, 0), 900, perturb_rate=0.08)
    add(OFFENSIVE, (1, 0, 0, 0, 0), 150, perturb_rate=0.3)
    for _ in range(280):
        template, swears = rng.choice(HARASSMENT)
        text = wrap(fill(template, rng), rng)
        if swears is None:
            swears = int(any(w in text for w in SWEARY_INSULTS))
        if rng.random() < 0.3:
            text = perturb(text, rng)
        out.append((text, (swears, 1, 0, 0, 0)))
    for _ in range(170):
        text = wrap(fill(rng.choice(SEXUAL), rng), rng)
        vulgar = int(bool(VULGAR.search(text)))
        out.append((perturb(text, rng) if rng.random() < 0.3 else text, (vulgar, 0, 1, 0, 0)))
    for _ in range(50):
        template, labels = rng.choice(SEXUAL_AT)
        text = wrap(fill(template, rng), rng)
        out.append((perturb(text, rng) if rng.random() < 0.3 else text, labels))
    add(SELF_HARM, (0, 0, 0, 1, 0), 180, perturb_rate=0.15)
    add(SELF_HARM_SWEAR, (1, 0, 0, 1, 0), 25)
    add(SPAM, (0, 0, 0, 0, 1), 200, perturb_rate=0.2)
    add(SPAM_SEXUAL, (0, 0, 1, 0, 1), 30)
    # Drawn last so the rows above stay as they were before these lists existed.
    add(MEETING, (0, 0, 0, 0, 0), 550, perturb_rate=0.05)
    add(EVERYDAY, (0, 0, 0, 0, 0), 450, perturb_rate=0.05)
    add(THREATS_AT_PLACES, (0, 1, 0, 0, 0), 110, perturb_rate=0.2)
    add(THREATS_AT_PLACES_SEXUAL, (0, 1, 1, 0, 0), 20)
    rng.shuffle(out)
    return out


def main() -> None:
    data = rows(random.Random(20251201))
    with OUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", *CATEGORIES])
        seen = set()
        for text, labels in data:
            if text in seen:  # duplicates add weight, not information
                continue
            seen.add(text)
            writer.writerow([text, *labels])
    print(f"{len(seen)} rows -> {OUT}")


if __name__ == "__main__":
    main()
